"""Leases: what keeps blobs and unpacked layers alive while an operation uses them.

A `Lease` pins blobs (by digest) and layer dirs (by diff_id) in the store's `Pins`,
counted, under the store's lock; the store never deletes a pinned one. New blobs are
written through a lease and pinned in the same locked step that moves them into place,
so no collection can ever see them unreferenced and unpinned. When the lease ends
(`ImageStore.lease()` leaves its `with` block), the store deletes whatever the lease
pinned that no image references now: the leftovers of a failed import or load.
"""

from __future__ import annotations

import gzip
import io
import threading
from collections import Counter
from collections.abc import Callable

from api.errors import InvalidArgument, NotFound

from .blobs import CHUNK, BlobStore, Descriptor, Digest, HashingReader, Readable
from .tarsafe import Limits, open_decompressed

_GZIP_LEVEL = 6  # docker's default; 9 costs ~3x the time for a few percent


class Pins:
    """Counts of the leases pinning each blob and layer dir; guarded by `lock`."""

    def __init__(self, lock: threading.RLock) -> None:
        self.lock = lock
        self.blobs: Counter[Digest] = Counter()
        self.layers: Counter[Digest] = Counter()

    def release(self, lease: Lease) -> None:
        with self.lock:
            self.blobs.subtract(lease.blobs)
            self.layers.subtract(lease.layers)
            # drop the zero counts, so that `set(self.blobs)` is what is pinned
            self.blobs = +self.blobs
            self.layers = +self.layers


class Lease:
    """Pins blobs and layer dirs an operation in progress uses, and writes new ones."""

    def __init__(self, pins: Pins, *, blobs: BlobStore, limits: Limits) -> None:
        self._pins = pins
        self._store = blobs
        self._limits = limits
        self.blobs: list[Digest] = []
        self.layers: list[Digest] = []

    def pin_blob(self, digest: Digest) -> Descriptor:
        """Pin an existing blob; InvalidArgument if the store does not have it."""
        with self._pins.lock:
            try:
                size = self._store.size(digest)
            except NotFound:
                raise InvalidArgument(f"blob {digest} is missing") from None
            self._pins.blobs[digest] += 1
            self.blobs.append(digest)
        return Descriptor(digest=digest, size=size)

    def pin_layer(self, diff_id: Digest) -> None:
        with self._pins.lock:
            self._pins.layers[diff_id] += 1
            self.layers.append(diff_id)

    def put_blob(
        self, stream: Readable, *, expected: Digest | None = None, max_size: int | None = None
    ) -> Descriptor:
        with self._store.writer(expected=expected, max_size=max_size) as writer:
            while chunk := stream.read(CHUNK):
                writer.write(chunk)
            return self._commit(writer.commit)

    def put_layer(self, stream: Readable) -> tuple[Descriptor, Digest]:
        """Store a layer tar (plain or compressed) as a gzip blob; → (blob, diff_id).

        One pass: the uncompressed bytes are hashed (the diff_id) on their way into
        the compressor, whose output is hashed (the blob digest) on its way to disk.
        gzip's header carries no time, so the same tar always makes the same blob."""
        _, plain = open_decompressed(stream)
        hashing = HashingReader(plain, max_bytes=self._limits.max_total_bytes, what="layer")
        tar = io.BufferedReader(hashing)
        with self._store.writer() as writer:
            with gzip.GzipFile(fileobj=writer, mode="wb", mtime=0, compresslevel=_GZIP_LEVEL) as gz:
                while chunk := tar.read(CHUNK):
                    gz.write(chunk)
            return self._commit(writer.commit), hashing.digest

    def _commit(self, commit: Callable[[], Descriptor]) -> Descriptor:
        with self._pins.lock:
            descriptor = commit()
            self._pins.blobs[descriptor.digest] += 1
            self.blobs.append(descriptor.digest)
        return descriptor

"""A content-addressed blob store: layer blobs, image configs and manifests by sha256.

Layout: `<root>/sha256/<64 hex>`, one file per blob, named by the sha256 of its content.

Invariants:
- A blob file is complete and its name is its digest. Writers stream into a temporary
  file (`.tmp-*`) in the same directory while hashing, verify the digest the caller
  expected, fsync, and `os.replace` it into place; on any failure the temporary file
  is removed, so nothing partial is ever visible under a digest name.
- Digests are validated (`sha256:` + 64 lowercase hex) before they become a path, so
  a digest can never name anything outside `<root>/sha256/`.
- The store never holds a blob in memory; `read_bytes` exists for small documents and
  takes a size cap.

    >>> store = BlobStore(root)
    >>> desc = store.put_bytes(b"{}")
    >>> store.open(desc.digest).read()
    b'{}'
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, NewType, Protocol

from api.errors import InvalidArgument, NotFound

Digest = NewType("Digest", str)
"""`sha256:<64 lowercase hex>`; only `parse_digest` and the hashing helpers make one."""

CHUNK = 1 << 20
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TEMP_PREFIX = ".tmp-"


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def parse_digest(text: str) -> Digest:
    """Validate `text` as a sha256 digest; InvalidArgument otherwise."""
    if not isinstance(text, str) or not _DIGEST.fullmatch(text):
        raise InvalidArgument(f"invalid digest: {text!r}")
    return Digest(text)


def digest_hex(digest: Digest) -> str:
    return digest.removeprefix("sha256:")


def sha256_digest(data: bytes) -> Digest:
    return Digest("sha256:" + hashlib.sha256(data).hexdigest())


@dataclass(frozen=True)
class Descriptor:
    digest: Digest
    size: int


class HashingReader(io.RawIOBase):
    """Reads through `source`, hashing and counting every byte.

    With `expected`, reaching the end of `source` with another digest raises
    InvalidArgument; with `max_bytes`, reading past it does. `what` names the
    stream in those messages. Wrap it in `io.BufferedReader` for a `BinaryIO`;
    with `close_source`, closing it closes `source`.
    """

    def __init__(
        self,
        source: Readable,
        *,
        expected: Digest | None = None,
        max_bytes: int | None = None,
        what: str = "blob",
        close_source: bool = False,
    ) -> None:
        super().__init__()
        self._source = source
        self._close_source = close_source
        self._hash = hashlib.sha256()
        self._expected = expected
        self._max_bytes = max_bytes
        self._what = what
        self.count = 0

    @property
    def digest(self) -> Digest:
        return Digest("sha256:" + self._hash.hexdigest())

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if self._close_source and not self.closed and isinstance(self._source, io.IOBase):
            self._source.close()
        super().close()

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._source.read(len(buffer))
        if not data:
            self._check_digest()
            return 0
        self.count += len(data)
        if self._max_bytes is not None and self.count > self._max_bytes:
            raise InvalidArgument(f"{self._what} exceeds the maximum of {self._max_bytes} bytes")
        self._hash.update(data)
        buffer[: len(data)] = data
        return len(data)

    def _check_digest(self) -> None:
        if self._expected is not None and self.digest != self._expected:
            raise InvalidArgument(
                f"{self._what} digest mismatch: expected {self._expected}, got {self.digest}"
            )


def drain(stream: Readable) -> None:
    """Read `stream` to its end (so that a hashing reader under it sees every byte)."""
    while stream.read(CHUNK):
        pass


class BlobWriter:
    """A blob being written: `write` chunks, then `commit`; leaving the `with` block
    without committing removes the temporary file."""

    def __init__(self, directory: Path, *, expected: Digest | None, max_size: int | None) -> None:
        fd, name = tempfile.mkstemp(dir=directory, prefix=_TEMP_PREFIX)
        self._dir = directory
        self._temp = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self._expected = expected
        self._max_size = max_size
        self._size = 0
        self._done = False

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        self._size += len(data)
        if self._max_size is not None and self._size > self._max_size:
            raise InvalidArgument(f"blob exceeds the maximum of {self._max_size} bytes")
        self._hash.update(data)
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()

    def commit(self) -> Descriptor:
        """Verify, fsync and move the blob into place; returns its descriptor."""
        digest = Digest("sha256:" + self._hash.hexdigest())
        if self._expected is not None and digest != self._expected:
            raise InvalidArgument(f"digest mismatch: expected {self._expected}, got {digest}")
        self._file.flush()
        os.fchmod(self._file.fileno(), 0o644)
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._temp, self._dir / digest_hex(digest))
        _fsync_dir(self._dir)
        self._done = True
        return Descriptor(digest=digest, size=self._size)

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self._file.close()
            self._temp.unlink(missing_ok=True)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.abort()


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._dir = root / "sha256"
        self._dir.mkdir(parents=True, exist_ok=True)

    def writer(self, *, expected: Digest | None = None, max_size: int | None = None) -> BlobWriter:
        if expected is not None:
            expected = parse_digest(expected)
        return BlobWriter(self._dir, expected=expected, max_size=max_size)

    def put(
        self, stream: Readable, *, expected: Digest | None = None, max_size: int | None = None
    ) -> Descriptor:
        """Store everything `stream` yields; InvalidArgument if it is not `expected`."""
        with self.writer(expected=expected, max_size=max_size) as writer:
            while chunk := stream.read(CHUNK):
                writer.write(chunk)
            return writer.commit()

    def put_bytes(self, data: bytes, *, expected: Digest | None = None) -> Descriptor:
        return self.put(io.BytesIO(data), expected=expected)

    def path(self, digest: Digest) -> Path:
        return self._dir / digest_hex(parse_digest(digest))

    def exists(self, digest: Digest) -> bool:
        return self.path(digest).is_file()

    def open(self, digest: Digest) -> BinaryIO:
        try:
            return self.path(digest).open("rb")
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found") from None

    def open_verified(self, digest: Digest) -> BinaryIO:
        """Open a blob whose reader raises InvalidArgument at its end if the content
        no longer matches the digest (a corrupt store)."""
        return io.BufferedReader(
            HashingReader(self.open(digest), expected=digest, close_source=True)
        )

    def read_bytes(self, digest: Digest, *, max_size: int) -> bytes:
        """A small blob (a config, a manifest) in memory, verified."""
        if self.size(digest) > max_size:
            raise InvalidArgument(f"blob {digest} exceeds the maximum of {max_size} bytes")
        with self.open_verified(digest) as stream:
            return stream.read()

    def size(self, digest: Digest) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found") from None

    def delete(self, digest: Digest) -> None:
        self.path(digest).unlink(missing_ok=True)

    def digests(self) -> Iterator[Digest]:
        for entry in sorted(os.listdir(self._dir)):
            if _HEX64.fullmatch(entry):
                yield Digest(f"sha256:{entry}")

    def remove_temporary(self) -> None:
        """Remove temporary files a crashed writer left behind (call at startup only)."""
        for entry in os.listdir(self._dir):
            if entry.startswith(_TEMP_PREFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._dir / entry)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace the file `path` with `data` atomically and durably (temporary file in
    the same directory, fsync, rename, fsync of the directory)."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=_TEMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

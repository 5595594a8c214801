"""The image store: images as docker keeps them, on top of the blob store and tarsafe.

On disk, under `root`:

    blobs/sha256/<hex>          layer blobs as stored, configs, manifests (BlobStore)
    layers/<diff-id hex>/       each layer unpacked once, an overlayfs lowerdir
    images/<config hex>.json    our record of an image: manifest digest, layers, created
    repositories.json           {"busybox:latest": "sha256:<config hex>", ...}

The image ID is the digest of its config blob, as in docker. Records and
`repositories.json` are replaced atomically (temporary file, fsync, `os.replace`).

Invariants and their order:
- Adding an image writes blobs, then layer dirs, then the record, then tags; removing
  goes the other way (tags, record, then unreferenced blobs and layer dirs). A crash
  therefore leaves at most unreferenced blobs or layer dirs, which `prune` collects;
  a tag never names a missing record.
- A blob or layer dir is deleted only when no image record references it and no
  `Lease` pins it (see `lease`). Every operation that writes content holds a lease
  for what it wrote or uses; when the lease ends, whatever it pinned that no image
  references is deleted, so a failed import or load leaves nothing behind.
- One `threading.RLock` guards the in-memory metadata (records, tags, pins) and the
  files that hold it. Slow work (compressing, hashing, unpacking) runs outside it;
  the `users` callbacks of `remove` and `prune` are called outside it too, so that
  the container code may lock its own state in them.

    >>> store = ImageStore(Path("/var/lib/pyswarm/images"))
    >>> with open("rootfs.tar", "rb") as f:
    ...     image = store.import_rootfs(f, "busybox:latest", changes=['CMD ["sh"]'])
    >>> store.layer_dirs(image)  # lowest layer first; overlayfs wants them reversed
    [PosixPath('/var/lib/pyswarm/images/layers/5b0d...')]
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import io
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from api.errors import Conflict, EngineFailure, InvalidArgument, NotFound

from . import oci
from .blobs import (
    BlobStore,
    Descriptor,
    Digest,
    Readable,
    digest_hex,
    parse_digest,
    write_atomic,
)
from .changes import apply_changes
from .lease import Lease, Pins
from .model import Image, LayerDescriptor, Record, RemoveResult
from .reference import Reference, parse_reference
from .tarsafe import (
    DEFAULT_LIMITS,
    Compression,
    Limits,
    extract_layer_atomically,
    sniff,
)

__all__ = ["Image", "ImageStore", "LayerDescriptor", "Lease", "RemoveResult", "UsersOf"]

log = logging.getLogger(__name__)

UsersOf = Callable[[str], list[str]]
"""`users(image_id)` → ids of the containers that use the image."""

_LAYER_TYPE_BY_COMPRESSION = {
    Compression.NONE: oci.MediaType.OCI_LAYER,
    Compression.GZIP: oci.MediaType.OCI_LAYER_GZIP,
}


class ImageStore:
    """Images by ID and tag over a blob store and unpacked layers (see the module doc)."""

    def __init__(self, root: Path, *, limits: Limits = DEFAULT_LIMITS) -> None:
        self.root = root
        self.limits = limits
        self.blobs = BlobStore(root / "blobs")
        self._layers = root / "layers"
        self._records = root / "images"
        self._repositories = root / "repositories.json"
        self._lock = threading.RLock()
        self._pins = Pins(self._lock)
        for directory in (self._layers, self._records):
            directory.mkdir(parents=True, exist_ok=True)
        self._remove_temporary()
        self._images = self._load_records()
        self._tags = self._load_tags()

    # ---- writing images -----------------------------------------------------------

    @contextlib.contextmanager
    def lease(self) -> Iterator[Lease]:
        lease = Lease(self._pins, blobs=self.blobs, limits=self.limits)
        try:
            yield lease
        finally:
            self._release(lease)

    def import_rootfs(
        self,
        stream: Readable,
        reference: str | None,
        *,
        changes: Sequence[str] = (),
        message: str = "",
    ) -> Image:
        """`docker import`: a rootfs tar (plain or compressed) becomes a one-layer image."""
        ref = _tag_reference(reference) if reference else None
        container_config = apply_changes({}, changes)
        with self.lease() as lease:
            blob, diff_id = lease.put_layer(stream)
            config = oci.new_image_config(
                [diff_id], container_config=container_config, comment=message
            )
            return self.add_image(
                config, layers=[(blob, diff_id)], reference=str(ref) if ref else None
            )

    def add_image(
        self,
        config: Mapping[str, Any] | bytes,
        *,
        layers: Sequence[tuple[Descriptor, Digest]],
        reference: str | None = None,
        manifest: bytes | None = None,
    ) -> Image:
        """Add an image whose layer blobs are in the store, unpacking its layers.

        `config` as bytes is stored verbatim (its digest is the image ID, as loaded
        or pulled); as a mapping it is serialised canonically. `manifest` (bytes) is
        kept verbatim when given, after checking it names this config and these
        layers; otherwise an OCI manifest is written."""
        ref = _tag_reference(reference) if reference else None
        config_bytes = config if isinstance(config, bytes) else oci.dumps(config)
        config_doc = oci.loads_object(config_bytes, what="image config")
        if oci.config_diff_ids(config_doc) != [diff_id for _, diff_id in layers]:
            raise InvalidArgument("image config does not match its layers (rootfs.diff_ids)")
        with self.lease() as lease:
            layer_types = self._pin_layers(lease, layers)
            self.ensure_layers(layers)
            config_blob = lease.put_blob(io.BytesIO(config_bytes))
            if manifest is None:
                manifest = oci.build_manifest(
                    config_blob,
                    [(blob, kind) for (blob, _), kind in zip(layers, layer_types, strict=True)],
                )
            manifest_types = self._check_manifest(manifest, config_blob, layers)
            manifest_blob = lease.put_blob(io.BytesIO(manifest))
            record = Record(
                id=config_blob.digest,
                manifest_digest=manifest_blob.digest,
                layers=tuple(
                    LayerDescriptor(blob.digest, blob.size, media_type, diff_id)
                    for (blob, diff_id), media_type in zip(layers, manifest_types, strict=True)
                ),
                created=time.time(),
                config=config_doc,
            )
            with self._lock:
                replaced = self._images.get(record.id)
                self._save_record(record)
                if replaced is not None:  # e.g. loaded again with another manifest
                    self._collect(replaced.blobs, ())
                if ref is not None:
                    self._set_tag(str(ref), record.id)
                return self._image(record)

    def ensure_layers(
        self, layers: Sequence[tuple[Descriptor, Digest]], *, blobs_verified: bool = False
    ) -> list[Path]:
        """Unpack the layers not unpacked yet (verifying blob digests and diff_ids);
        the caller holds a lease on them. InvalidArgument if one does not match.

        `blobs_verified`: the caller has just checked the blobs' digests (a pull that
        verified them on the way in), so they are not hashed a second time; the
        unpacked content is still checked against its diff_id."""
        return [
            self._ensure_layer(blob.digest, diff_id, verify_blob=not blobs_verified)
            for blob, diff_id in layers
        ]

    def layer_dirs(self, image: Image) -> list[Path]:
        """The image's unpacked layers, lowest first; EngineFailure if one is corrupt."""
        with self.lease() as lease:
            for layer in image.layers:
                lease.pin_layer(layer.diff_id)
            paths = []
            for layer in image.layers:
                try:
                    lease.pin_blob(layer.digest)
                    paths.append(self._ensure_layer(layer.digest, layer.diff_id))
                except InvalidArgument as error:
                    raise EngineFailure(
                        f"layer {layer.digest} is corrupt: {error.message}"
                    ) from None
            return paths

    def tag(self, source: str, target: str) -> Digest | None:
        """Point `target` at the image `source` names; → the image it pointed at before."""
        ref = _tag_reference(target)
        with self._lock:
            record, _ = self._find(source)
            return self._set_tag(str(ref), record.id)

    # ---- reading ------------------------------------------------------------------

    def resolve(self, ref: str) -> Image:
        return self.lookup(ref)[0]

    def lookup(self, ref: str) -> tuple[Image, Reference | None]:
        """The image `ref` names, and the reference it matched if it was a name (not
        an ID). Accepts name[:tag], name@digest, a full ID, or a unique ID prefix."""
        with self._lock:
            record, named = self._find(ref)
            return self._image(record), named

    def inspect(self, ref: str) -> dict[str, Any]:
        """`docker image inspect`'s document."""
        image = self.resolve(ref)
        config = image.config
        return {
            "Id": image.id,
            "RepoTags": image.repo_tags,
            "RepoDigests": image.repo_digests,
            "Parent": "",
            "Comment": config.get("comment", ""),
            "Created": config.get("created") or oci.rfc3339(image.created),
            "Author": config.get("author", ""),
            "Config": oci.docker_config_view(config.get("config") or {}),
            "Architecture": config.get("architecture", ""),
            "Os": config.get("os", ""),
            "Size": image.size,
            "RootFS": {"Type": "layers", "Layers": [layer.diff_id for layer in image.layers]},
            "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
        }

    def config_of(self, image: Image | str) -> dict[str, Any]:
        if isinstance(image, str):
            image = self.resolve(image)
        return copy.deepcopy(image.config)

    # ---- removing -----------------------------------------------------------------

    def remove(self, ref: str, *, force: bool, users: UsersOf) -> RemoveResult:
        """`docker rmi`: a name untags (`name@digest` untags every tag of that name);
        the last tag or an ID deletes the image, unless a container uses it: then
        Conflict, or with `force` the tags go and the image stays (its layers may be
        mounted). By ID, tags in several repositories need `force`."""
        image = self.resolve(ref)
        containers = users(image.id)
        with self._lock:
            record, named = self._find(ref)
            if record.id != image.id:
                raise Conflict(f"conflict: {ref} changed while it was being removed, try again")
            tags = self._tags_of(record.id)
            if named is None:
                return self._remove_image(record, tags, containers, force=force)
            if named.digest is None:
                removed = [str(named)]
            else:  # name@digest exists through the tags of that name: they go with it
                removed = [tag for tag in tags if parse_reference(tag).name == named.name]
            return self._remove_tags(removed, str(named), record, tags, containers, force=force)

    def prune(self, *, all: bool, users: UsersOf) -> tuple[builtins.list[str], int]:
        """Delete dangling (untagged) images, or with `all` every image no container
        uses; also collects unreferenced blobs and layers. → (deleted IDs, bytes freed)."""
        with self._lock:
            candidates = [
                record.id for record in self._images.values() if all or not self._tags_of(record.id)
            ]
        in_use = {image_id for image_id in candidates if users(image_id)}
        deleted: builtins.list[str] = []
        freed = 0
        with self._lock:
            for image_id in candidates:
                record = self._images.get(image_id)
                if image_id in in_use or record is None:
                    continue
                if self._tags_of(image_id) and not all:
                    continue
                self._untag(self._tags_of(image_id))
                freed += self._delete(record)
                deleted.append(image_id)
            freed += self._collect(self.blobs.digests(), self._unpacked_layers())
        return deleted, freed

    def list(self) -> builtins.list[Image]:
        """All images, newest first."""
        with self._lock:
            images = [self._image(record) for record in self._images.values()]
        return sorted(images, key=lambda image: (-image.created, image.id))

    # ---- internals: lookup ----------------------------------------------------------

    def _find(self, text: str) -> tuple[Record, Reference | None]:
        if text.startswith("sha256:"):
            return self._find_by_id(text.removeprefix("sha256:"), text), None
        with contextlib.suppress(InvalidArgument):
            ref = parse_reference(text)
            record = self._find_by_reference(ref)
            if record is not None:
                return record, ref
        return self._find_by_id(text, text), None

    def _find_by_reference(self, ref: Reference) -> Record | None:
        if ref.digest is None:
            image_id = self._tags.get(str(ref))
            return None if image_id is None else self._images[image_id]
        by_digest = [r for r in self._images.values() if r.manifest_digest == ref.digest]
        for record in by_digest:
            if any(parse_reference(tag).name == ref.name for tag in self._tags_of(record.id)):
                return record
        # Pulled by digest, so never tagged: the digest names the content, whatever
        # the repository.
        return by_digest[0] if by_digest else None

    def _find_by_id(self, prefix: str, text: str) -> Record:
        if not prefix or len(prefix) > 64 or prefix.strip("0123456789abcdef"):
            raise NotFound(f"No such image: {text}")
        matches = [record for record in self._images.values() if record.id[7:].startswith(prefix)]
        if len(matches) > 1:
            raise NotFound(f"No such image: {text} (the ID prefix is ambiguous)")
        if not matches:
            raise NotFound(f"No such image: {text}")
        return matches[0]

    def _tags_of(self, image_id: Digest) -> builtins.list[str]:
        return sorted(tag for tag, target in self._tags.items() if target == image_id)

    def _image(self, record: Record) -> Image:
        created = oci.parse_rfc3339(record.config.get("created"))
        return Image(
            id=record.id,
            repo_tags=self._tags_of(record.id),
            created=record.created if created is None else created,
            size=sum(layer.size for layer in record.layers),
            config=copy.deepcopy(record.config),
            manifest_digest=record.manifest_digest,
            layers=record.layers,
        )

    # ---- internals: adding --------------------------------------------------------

    def _pin_layers(
        self, lease: Lease, layers: Sequence[tuple[Descriptor, Digest]]
    ) -> builtins.list[str]:
        """Pin each layer's blob and dir; → the media types their content shows."""
        types = []
        for blob, diff_id in layers:
            stored = lease.pin_blob(blob.digest)
            lease.pin_layer(diff_id)
            if stored.size != blob.size:
                raise InvalidArgument(
                    f"layer {blob.digest} has {stored.size} bytes, not {blob.size}"
                )
            with self.blobs.open(blob.digest) as stream:
                compression = sniff(stream.read(6))
            if compression not in _LAYER_TYPE_BY_COMPRESSION:
                raise InvalidArgument(
                    f"layer {blob.digest} uses {compression.value} compression, "
                    "which is not supported"
                )
            types.append(_LAYER_TYPE_BY_COMPRESSION[compression].value)
        return types

    def _check_manifest(
        self, manifest: bytes, config: Descriptor, layers: Sequence[tuple[Descriptor, Digest]]
    ) -> builtins.list[str]:
        """Check that a given manifest names this config and these layers; → the
        layers' media types."""
        parsed = oci.parse_manifest(manifest)
        if parsed.config.digest != config.digest:
            raise InvalidArgument(
                f"manifest names config {parsed.config.digest}, not {config.digest}"
            )
        if [blob.digest for blob, _ in parsed.layers] != [blob.digest for blob, _ in layers]:
            raise InvalidArgument("manifest does not name the image's layers")
        return [media_type for _, media_type in parsed.layers]

    def _ensure_layer(self, digest: Digest, diff_id: Digest, *, verify_blob: bool = True) -> Path:
        final = self._layers / digest_hex(diff_id)
        if final.is_dir():
            return final
        opened = self.blobs.open_verified(digest) if verify_blob else self.blobs.open(digest)
        with opened as stream:
            extract_layer_atomically(stream, final, limits=self.limits, expected_diff_id=diff_id)
        return final

    def _save_record(self, record: Record) -> None:
        _write_json(self._records / f"{digest_hex(record.id)}.json", record.to_json())
        self._images[record.id] = record

    def _set_tag(self, tag: str, image_id: Digest) -> Digest | None:
        previous = self._tags.get(tag)
        self._tags[tag] = image_id
        _write_json(self._repositories, self._tags)
        return None if previous == image_id else previous

    # ---- internals: removing ------------------------------------------------------

    def _remove_tags(
        self,
        removed: builtins.list[str],
        ref: str,
        record: Record,
        tags: builtins.list[str],
        containers: builtins.list[str],
        *,
        force: bool,
    ) -> RemoveResult:
        untagged = removed if ref in removed else [*removed, ref]
        if set(tags) - set(removed):
            self._untag(removed)
            return RemoveResult(untagged=untagged, deleted=[])
        if containers and not force:
            raise Conflict(
                f'conflict: unable to remove repository reference "{ref}" (must force) - '
                f"container {containers[0][:12]} is using its referenced image "
                f"{digest_hex(record.id)[:12]}"
            )
        self._untag(removed)
        if containers:
            return RemoveResult(untagged=untagged, deleted=[])
        self._delete(record)
        return RemoveResult(untagged=untagged, deleted=[record.id])

    def _remove_image(
        self,
        record: Record,
        tags: builtins.list[str],
        containers: builtins.list[str],
        *,
        force: bool,
    ) -> RemoveResult:
        short = digest_hex(record.id)[:12]
        repositories = {parse_reference(tag).name for tag in tags}
        if len(repositories) > 1 and not force:
            raise Conflict(
                f"conflict: unable to delete {short} (must be forced) - "
                "image is referenced in multiple repositories"
            )
        if containers and not force:
            raise Conflict(
                f"conflict: unable to delete {short} (must be forced) - "
                f"image is being used by container {containers[0][:12]}"
            )
        self._untag(tags)
        if containers:
            return RemoveResult(untagged=tags, deleted=[])
        self._delete(record)
        return RemoveResult(untagged=tags, deleted=[record.id])

    def _untag(self, tags: Iterable[str]) -> None:
        for tag in tags:
            del self._tags[tag]
        _write_json(self._repositories, self._tags)

    def _delete(self, record: Record) -> int:
        """Delete an untagged image and what only it referenced; → bytes freed."""
        (self._records / f"{digest_hex(record.id)}.json").unlink(missing_ok=True)
        del self._images[record.id]
        return self._collect(record.blobs, (layer.diff_id for layer in record.layers))

    def _release(self, lease: Lease) -> None:
        with self._lock:
            self._pins.release(lease)
            self._collect(lease.blobs, lease.layers)

    def _collect(self, blobs: Iterable[Digest], layers: Iterable[Digest]) -> int:
        """Delete those of `blobs` and `layers` (diff_ids) no image references and no
        lease pins; → bytes freed. Runs under the lock, so nothing can start using
        one meanwhile (a big layer dir holds the lock while it is removed)."""
        with self._lock:
            referenced_blobs: set[Digest] = set()
            referenced_layers: set[Digest] = set()
            for record in self._images.values():
                referenced_blobs |= record.blobs
                referenced_layers.update(layer.diff_id for layer in record.layers)
            freed = 0
            for digest in set(blobs) - referenced_blobs - set(self._pins.blobs):
                with contextlib.suppress(NotFound):
                    freed += self.blobs.size(digest)
                self.blobs.delete(digest)
            for diff_id in set(layers) - referenced_layers - set(self._pins.layers):
                freed += _remove_tree(self._layers / digest_hex(diff_id))
            return freed

    def _unpacked_layers(self) -> builtins.list[Digest]:
        return [
            Digest(f"sha256:{entry.name}")
            for entry in self._layers.iterdir()
            if not entry.name.startswith(".")
        ]

    # ---- internals: startup -------------------------------------------------------

    def _remove_temporary(self) -> None:
        self.blobs.remove_temporary()
        for directory in (self._layers, self._records, self.root):
            for entry in directory.iterdir():
                if entry.name.startswith(".tmp-"):
                    _remove_tree(entry)

    def _load_records(self) -> dict[Digest, Record]:
        records = {}
        for path in sorted(self._records.glob("*.json")):
            try:
                record = self._read_record(path)
            except (OSError, ValueError, KeyError, TypeError, InvalidArgument, NotFound) as e:
                log.warning("ignoring the unreadable image record %s: %s", path, e)
                continue
            records[record.id] = record
        return records

    def _read_record(self, path: Path) -> Record:
        document = json.loads(path.read_bytes())
        image_id = parse_digest(document["id"])
        config = self.blobs.read_bytes(image_id, max_size=oci.MAX_DOCUMENT_SIZE)
        return Record.from_json(document, config=oci.loads_object(config, what="image config"))

    def _load_tags(self) -> dict[str, Digest]:
        try:
            document = json.loads(self._repositories.read_bytes())
        except FileNotFoundError:
            return {}
        return {
            str(tag): Digest(image_id)
            for tag, image_id in document.items()
            if image_id in self._images
        }


def _tag_reference(text: str) -> Reference:
    ref = parse_reference(text)
    if ref.digest is not None:
        raise InvalidArgument("refusing to create a tag with a digest reference")
    return ref


def _write_json(path: Path, document: Any) -> None:
    write_atomic(path, json.dumps(document, indent=1, sort_keys=True).encode())


def _remove_tree(path: Path) -> int:
    """Remove a file or directory tree (never following symlinks); → bytes it held."""
    if not os.path.lexists(path):
        return 0
    if path.is_symlink() or not path.is_dir():
        size = path.lstat().st_size
        path.unlink()
        return size
    size = sum(
        os.lstat(os.path.join(directory, name)).st_size
        for directory, _, files in os.walk(path)
        for name in files
    )
    shutil.rmtree(path)
    return size

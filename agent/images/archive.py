"""`save` and `load`: image archives as Docker 25+ writes them, read in both formats.

`save` writes one tar that is at once an OCI image layout and a docker-archive:

    oci-layout                  {"imageLayoutVersion": "1.0.0"}
    blobs/sha256/<hex>          configs, manifests and layer blobs, as stored
    index.json                  one manifest descriptor per tag, annotated with
                                org.opencontainers.image.ref.name = the tag and
                                io.containerd.image.name = the full name
    manifest.json               [{"Config": "blobs/sha256/..", "RepoTags": [..],
                                  "Layers": ["blobs/sha256/..", ..]}]
    repositories                {"busybox": {"latest": "<top layer hex>"}}

Docker-archive `Layers` point at the layer blobs, gzip-compressed as stored; loaders
(docker, skopeo) detect the compression. Member mtimes are 0, so the same images
always make the same archive.

`load` reads an OCI layout (index.json → manifests, following nested indexes to the
host's platform) or, without index.json, a classic docker-archive (manifest.json with
`<hex>/layer.tar` or `<hex>.tar` uncompressed layers and `<hex>.json` configs, which
are compressed to gzip blobs on the way in). The tar (itself plain or compressed) is
streamed once: every member with a name we know (`blobs/sha256/<64 hex>`, the legacy
`<64 hex>.json|.tar|/layer.tar`) goes straight into the blob store, and the handful of
small JSON documents into memory; other members are skipped, and no member name ever
becomes a path. Every blob digest and every diff_id is verified, all layers are
unpacked before the first image is recorded, and the whole load runs under one lease,
so a bad archive raises InvalidArgument with one line and leaves no blob behind.
"""

from __future__ import annotations

import io
import json
import posixpath
import re
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO

from api.errors import InvalidArgument

from . import oci
from .blobs import Descriptor, Digest, Readable, digest_hex, parse_digest, sha256_digest
from .reference import Reference, parse_reference
from .store import Image, ImageStore, Lease
from .tarsafe import Compression, iter_members, open_decompressed, sniff

OCI_LAYOUT = "oci-layout"
INDEX = "index.json"
DOCKER_MANIFEST = "manifest.json"
REPOSITORIES = "repositories"
_DOCUMENTS = frozenset({OCI_LAYOUT, INDEX, DOCKER_MANIFEST, REPOSITORIES})
_BLOB = re.compile(r"blobs/sha256/([0-9a-f]{64})")
_LEGACY = re.compile(r"[0-9a-f]{64}(?:\.json|\.tar|/layer\.tar)")
_MAX_MEMBERS = 100_000
_MAX_LINK_HOPS = 8
_MAX_INDEX_DEPTH = 4


# ---- save -------------------------------------------------------------------------


@dataclass
class _Saved:
    image: Image
    tags: list[Reference] = field(default_factory=list)


def save(store: ImageStore, references: Sequence[str], out: BinaryIO) -> None:
    """Write the images `references` name to `out` as one tar (see the module doc)."""
    if not references:
        raise InvalidArgument("no images to save")
    saved = _plan(store, references)
    with store.lease() as lease:
        digests = _blobs_of(saved)
        for digest in digests:
            lease.pin_blob(digest)
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, OCI_LAYOUT, oci.dumps({"imageLayoutVersion": "1.0.0"}))
            for directory in ("blobs", "blobs/sha256"):
                _add_directory(tar, directory)
            for digest in digests:
                _add_blob(tar, store, digest)
            _add_bytes(tar, INDEX, oci.dumps(_index(store, saved)))
            _add_bytes(tar, DOCKER_MANIFEST, oci.dumps(_docker_manifest(saved)))
            _add_bytes(tar, REPOSITORIES, oci.dumps(_repositories(saved)))


def _plan(store: ImageStore, references: Sequence[str]) -> list[_Saved]:
    """The images to save with the tags to save them under (none when named by ID)."""
    saved: dict[Digest, _Saved] = {}
    for text in references:
        image, named = store.lookup(text)
        entry = saved.setdefault(image.id, _Saved(image))
        if named is not None and named.digest is None and named not in entry.tags:
            entry.tags.append(named)
    return list(saved.values())


def _blobs_of(saved: Sequence[_Saved]) -> list[Digest]:
    digests: dict[Digest, None] = {}
    for entry in saved:
        image = entry.image
        for digest in (image.id, image.manifest_digest, *(layer.digest for layer in image.layers)):
            digests[digest] = None
    return list(digests)


def _index(store: ImageStore, saved: Sequence[_Saved]) -> dict[str, Any]:
    manifests = []
    for entry in saved:
        image = entry.image
        data = store.blobs.read_bytes(image.manifest_digest, max_size=oci.MAX_DOCUMENT_SIZE)
        descriptor = oci.descriptor_json(
            Descriptor(image.manifest_digest, len(data)), oci.parse_manifest(data).media_type
        )
        for tag in entry.tags:
            annotations = {
                oci.ANNOTATION_IMAGE_NAME: f"{tag.canonical_name}:{tag.tag}",
                oci.ANNOTATION_REF_NAME: str(tag.tag),
            }
            manifests.append({**descriptor, "annotations": annotations})
        if not entry.tags:
            manifests.append(descriptor)
    return {
        "schemaVersion": 2,
        "mediaType": oci.MediaType.OCI_INDEX.value,
        "manifests": manifests,
    }


def _docker_manifest(saved: Sequence[_Saved]) -> list[dict[str, Any]]:
    return [
        {
            "Config": _blob_path(entry.image.id),
            "RepoTags": [str(tag) for tag in entry.tags] or None,
            "Layers": [_blob_path(layer.digest) for layer in entry.image.layers],
        }
        for entry in saved
    ]


def _repositories(saved: Sequence[_Saved]) -> dict[str, dict[str, str]]:
    repositories: dict[str, dict[str, str]] = {}
    for entry in saved:
        if not entry.image.layers:
            continue
        top = digest_hex(entry.image.layers[-1].digest)
        for tag in entry.tags:
            repositories.setdefault(tag.name, {})[str(tag.tag)] = top
    return repositories


def _blob_path(digest: Digest) -> str:
    return f"blobs/sha256/{digest_hex(digest)}"


def _add_directory(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tar.addfile(info)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _add_blob(tar: tarfile.TarFile, store: ImageStore, digest: Digest) -> None:
    info = tarfile.TarInfo(_blob_path(digest))
    info.size = store.blobs.size(digest)
    info.mode = 0o444
    with store.blobs.open(digest) as blob:
        tar.addfile(info, blob)


# ---- load: staging ----------------------------------------------------------------


@dataclass
class _Staged:
    """What the archive held: small documents, blobs by member name, and links."""

    documents: dict[str, bytes] = field(default_factory=dict)
    files: dict[str, Descriptor] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)

    def lookup(self, path: str) -> Descriptor:
        name = _normalize(path)
        for _ in range(_MAX_LINK_HOPS):
            if name is None or name not in self.links:
                break
            name = self.links[name]
        if name is None or name not in self.files:
            raise InvalidArgument(f"the archive has no {path}")
        return self.files[name]

    def blob(self, descriptor: Descriptor) -> Descriptor:
        staged = self.lookup(_blob_path(descriptor.digest))
        if staged.size != descriptor.size:
            raise InvalidArgument(
                f"blob {descriptor.digest} has {staged.size} bytes, not {descriptor.size}"
            )
        return staged


@dataclass
class _Loadable:
    config: bytes
    layers: list[tuple[Descriptor, Digest]]
    manifest: bytes | None
    refs: list[Reference] = field(default_factory=list)


def load(store: ImageStore, stream: Readable) -> list[str]:
    """Load every image in the archive; → docker's lines ("Loaded image: busybox:latest")."""
    with store.lease() as lease:
        try:
            staged = _stage(lease, stream)
            loadables = _read_archive(store, lease, staged)
            for item in loadables:
                for _, diff_id in item.layers:
                    lease.pin_layer(diff_id)
                store.ensure_layers(item.layers)
        except InvalidArgument as error:
            raise InvalidArgument(f"invalid archive: {error.message}") from None
        return [line for item in loadables for line in _add(store, item)]


def _stage(lease: Lease, stream: Readable) -> _Staged:
    staged = _Staged()
    _, plain = open_decompressed(stream, what="archive")
    try:
        with tarfile.open(fileobj=plain, mode="r|") as tar:
            for count, member in enumerate(iter_members(tar), 1):
                if count > _MAX_MEMBERS:
                    raise InvalidArgument(f"more than {_MAX_MEMBERS} members")
                _stage_member(lease, staged, tar, member)
    except tarfile.TarError as error:
        raise InvalidArgument(f"not a valid tar: {error}") from None
    return staged


def _stage_member(
    lease: Lease, staged: _Staged, tar: tarfile.TarFile, member: tarfile.TarInfo
) -> None:
    name = _normalize(member.name)
    if name is None:
        return
    if member.issym() or member.islnk():
        # Links are aliases inside the archive (docker 25: `<id>/layer.tar ->
        # ../blobs/sha256/<hex>`), resolved lexically; nothing is ever followed on disk.
        base = posixpath.dirname(name) if member.issym() else ""
        target = _normalize(posixpath.normpath(posixpath.join(base, member.linkname)))
        if target is not None:
            staged.links[name] = target
        return
    if not member.isreg():
        return
    if name in _DOCUMENTS:
        if member.size > oci.MAX_DOCUMENT_SIZE:
            raise InvalidArgument(f"{name} is larger than {oci.MAX_DOCUMENT_SIZE} bytes")
        staged.documents[name] = _member_data(tar, member).read()
        return
    blob = _BLOB.fullmatch(name)
    if blob is None and not _LEGACY.fullmatch(name):
        return
    expected = parse_digest(f"sha256:{blob[1]}") if blob else None
    try:
        staged.files[name] = lease.put_blob(_member_data(tar, member), expected=expected)
    except InvalidArgument as error:
        raise InvalidArgument(f"{name}: {error.message}") from None


def _member_data(tar: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes]:
    data = tar.extractfile(member)
    if data is None:
        raise InvalidArgument(f"{member.name} has no data")
    return data


def _normalize(name: str) -> str | None:
    """A member name relative to the archive root, or None if it leaves it."""
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if not parts or ".." in parts or "\x00" in name:
        return None
    return "/".join(parts)


def _read_archive(store: ImageStore, lease: Lease, staged: _Staged) -> list[_Loadable]:
    if INDEX in staged.documents:
        loadables = _read_oci(store, staged)
    elif DOCKER_MANIFEST in staged.documents:
        loadables = _read_docker(store, lease, staged)
    else:
        raise InvalidArgument(f"neither {INDEX} nor {DOCKER_MANIFEST} found")
    if not loadables:
        raise InvalidArgument("it holds no images")
    return loadables


# ---- load: OCI layout -------------------------------------------------------------


def _read_oci(store: ImageStore, staged: _Staged) -> list[_Loadable]:
    by_manifest: dict[Digest, _Loadable] = {}
    for entry in oci.parse_index(staged.documents[INDEX], what=INDEX):
        data, manifest = _resolve_manifest(store, staged, entry, depth=0)
        digest = sha256_digest(data)
        if digest not in by_manifest:
            by_manifest[digest] = _from_manifest(store, staged, data, manifest)
        for ref in _names(entry.annotations):
            if ref not in by_manifest[digest].refs:
                by_manifest[digest].refs.append(ref)
    return list(by_manifest.values())


def _resolve_manifest(
    store: ImageStore, staged: _Staged, entry: oci.IndexEntry, *, depth: int
) -> tuple[bytes, oci.Manifest]:
    data = _document(store, staged, entry.descriptor)
    document = oci.loads_object(data, what=f"manifest {entry.descriptor.digest}")
    if entry.media_type not in oci.INDEX_TYPES and "manifests" not in document:
        what = f"manifest {entry.descriptor.digest}"
        return data, oci.parse_manifest(data, what=what, media_type=entry.media_type)
    if depth >= _MAX_INDEX_DEPTH:
        raise InvalidArgument(f"indexes nested more than {_MAX_INDEX_DEPTH} deep")
    chosen = _for_host(oci.parse_index(data, what=f"index {entry.descriptor.digest}"))
    return _resolve_manifest(store, staged, chosen, depth=depth + 1)


def _for_host(entries: Sequence[oci.IndexEntry]) -> oci.IndexEntry:
    host = oci.host_platform()
    for entry in entries:
        found = entry.platform
        if found and (found.os, found.architecture) == (host.os, host.architecture):
            return entry
    if len(entries) == 1 and entries[0].platform is None:
        return entries[0]
    raise InvalidArgument(f"no {host.os}/{host.architecture} image in the index")


def _from_manifest(
    store: ImageStore, staged: _Staged, data: bytes, manifest: oci.Manifest
) -> _Loadable:
    config = _document(store, staged, manifest.config)
    diff_ids = oci.config_diff_ids(oci.loads_object(config, what="image config"))
    if len(diff_ids) != len(manifest.layers):
        raise InvalidArgument(
            f"the manifest has {len(manifest.layers)} layers, the config {len(diff_ids)}"
        )
    layers = [
        (staged.blob(blob), diff_id)
        for (blob, _), diff_id in zip(manifest.layers, diff_ids, strict=True)
    ]
    return _Loadable(config=config, layers=layers, manifest=data)


def _document(store: ImageStore, staged: _Staged, descriptor: Descriptor) -> bytes:
    blob = staged.blob(descriptor)
    return store.blobs.read_bytes(blob.digest, max_size=oci.MAX_DOCUMENT_SIZE)


def _names(annotations: Mapping[str, str]) -> list[Reference]:
    """The names an index entry gives its image: containerd's full name, else a
    ref.name that is a whole reference (`busybox:1`); a bare tag names nothing."""
    full = annotations.get(oci.ANNOTATION_IMAGE_NAME)
    if full:
        return [_tag(full)]
    ref_name = annotations.get(oci.ANNOTATION_REF_NAME, "")
    if ":" in ref_name or "/" in ref_name:
        return [_tag(ref_name)]
    return []


def _tag(text: str) -> Reference:
    ref = parse_reference(text)
    if ref.digest is not None:
        raise InvalidArgument(f"{text} is not a tag")
    return ref


# ---- load: docker-archive ---------------------------------------------------------


def _read_docker(store: ImageStore, lease: Lease, staged: _Staged) -> list[_Loadable]:
    try:
        items = json.loads(staged.documents[DOCKER_MANIFEST])
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidArgument(f"{DOCKER_MANIFEST} is not valid JSON: {error}") from None
    if not isinstance(items, list):
        raise InvalidArgument(f"{DOCKER_MANIFEST} is not a list")
    converted: dict[Digest, Descriptor] = {}
    return [_from_docker_item(store, lease, staged, item, converted) for item in items]


def _from_docker_item(
    store: ImageStore,
    lease: Lease,
    staged: _Staged,
    item: Any,
    converted: dict[Digest, Descriptor],
) -> _Loadable:
    config_path, layer_paths, tags = _docker_item_fields(item)
    config_blob = staged.lookup(config_path)
    config = store.blobs.read_bytes(config_blob.digest, max_size=oci.MAX_DOCUMENT_SIZE)
    diff_ids = oci.config_diff_ids(oci.loads_object(config, what=config_path))
    if len(diff_ids) != len(layer_paths):
        raise InvalidArgument(
            f"{DOCKER_MANIFEST} lists {len(layer_paths)} layers, the config {len(diff_ids)}"
        )
    layers = [
        (_as_gzip(store, lease, staged.lookup(path), diff_id, converted), diff_id)
        for path, diff_id in zip(layer_paths, diff_ids, strict=True)
    ]
    return _Loadable(config=config, layers=layers, manifest=None, refs=[_tag(t) for t in tags])


def _docker_item_fields(item: Any) -> tuple[str, list[str], list[str]]:
    if not isinstance(item, dict):
        raise InvalidArgument(f"{DOCKER_MANIFEST} has an entry that is not an object")
    config, layers, tags = item.get("Config"), item.get("Layers"), item.get("RepoTags") or []
    if (
        not isinstance(config, str)
        or not isinstance(layers, list)
        or not isinstance(tags, list)
        or not all(isinstance(value, str) for value in (*layers, *tags))
    ):
        raise InvalidArgument(f"{DOCKER_MANIFEST} has a malformed entry")
    return config, layers, tags


def _as_gzip(
    store: ImageStore,
    lease: Lease,
    blob: Descriptor,
    diff_id: Digest,
    converted: dict[Digest, Descriptor],
) -> Descriptor:
    """A gzip blob of the layer; an uncompressed one is compressed (and checked
    against its diff_id on the way)."""
    with store.blobs.open(blob.digest) as stream:
        if sniff(stream.read(6)) is Compression.GZIP:
            return blob
    if blob.digest not in converted:
        with store.blobs.open_verified(blob.digest) as stream:
            compressed, actual = lease.put_layer(stream)
        if actual != diff_id:
            raise InvalidArgument(f"layer diff_id mismatch: expected {diff_id}, got {actual}")
        converted[blob.digest] = compressed
    return converted[blob.digest]


# ---- load: recording ----------------------------------------------------------------


def _add(store: ImageStore, item: _Loadable) -> Iterator[str]:
    image = store.add_image(item.config, layers=item.layers, manifest=item.manifest)
    if not item.refs:
        yield f"Loaded image ID: {image.id}"
    for ref in item.refs:
        previous = store.tag(image.id, str(ref))
        if previous is not None:
            yield (
                f"The image {ref} already exists, renaming the old one with ID {previous} "
                "to empty string"
            )
        yield f"Loaded image: {ref}"

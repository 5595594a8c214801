"""OCI image-spec documents: media types, manifests, indexes and image configs.

Pure functions over bytes and dicts; nothing here touches the disk. Parsers validate
what they return (digests, sizes, media types) and raise InvalidArgument with a one-line
reason naming the document, so callers can pass archive or registry input straight in.
Documents we write are serialised compactly with sorted keys, so the same image always
gets the same manifest digest.
"""

from __future__ import annotations

import enum
import json
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from api.errors import InvalidArgument

from .blobs import Descriptor, Digest, parse_digest

MAX_DOCUMENT_SIZE = 8 << 20  # manifests, indexes and configs are small; cap what we read


class MediaType(enum.StrEnum):
    OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
    OCI_INDEX = "application/vnd.oci.image.index.v1+json"
    OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
    OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
    OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
    DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
    DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
    DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
    DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
    DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"


MANIFEST_TYPES = frozenset({MediaType.OCI_MANIFEST, MediaType.DOCKER_MANIFEST})
INDEX_TYPES = frozenset({MediaType.OCI_INDEX, MediaType.DOCKER_MANIFEST_LIST})
LAYER_TYPES = frozenset(
    {
        MediaType.OCI_LAYER,
        MediaType.OCI_LAYER_GZIP,
        MediaType.DOCKER_LAYER,
        MediaType.DOCKER_LAYER_GZIP,
    }
)

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[tuple[Descriptor, str], ...]  # (blob, layer media type)


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""


@dataclass(frozen=True)
class IndexEntry:
    descriptor: Descriptor
    media_type: str
    platform: Platform | None
    annotations: Mapping[str, str] = field(default_factory=dict)


def dumps(document: Any) -> bytes:
    """The canonical serialisation of the documents we write."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def loads_object(data: bytes, *, what: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidArgument(f"{what} is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise InvalidArgument(f"{what} is not a JSON object")
    return document


def descriptor_json(descriptor: Descriptor, media_type: str) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": descriptor.digest, "size": descriptor.size}


def build_manifest(config: Descriptor, layers: Sequence[tuple[Descriptor, str]]) -> bytes:
    return dumps(
        {
            "schemaVersion": 2,
            "mediaType": MediaType.OCI_MANIFEST.value,
            "config": descriptor_json(config, MediaType.OCI_CONFIG),
            "layers": [descriptor_json(blob, media_type) for blob, media_type in layers],
        }
    )


def parse_descriptor(value: Any, *, what: str) -> tuple[Descriptor, str]:
    """A descriptor object → (Descriptor, media type)."""
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} has a malformed descriptor")
    size = value.get("size")
    media_type = value.get("mediaType", "")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidArgument(f"{what} has a descriptor with an invalid size")
    if not isinstance(media_type, str):
        raise InvalidArgument(f"{what} has a descriptor with an invalid media type")
    try:
        digest = parse_digest(value.get("digest", ""))
    except InvalidArgument as error:
        raise InvalidArgument(f"{what}: {error.message}") from None
    return Descriptor(digest=digest, size=size), media_type


def parse_manifest(data: bytes, *, what: str = "manifest", media_type: str = "") -> Manifest:
    document = loads_object(data, what=what)
    kind = document.get("mediaType") or media_type or MediaType.OCI_MANIFEST
    if kind not in MANIFEST_TYPES or document.get("schemaVersion") != 2:
        raise InvalidArgument(f"{what} is not an image manifest (media type {kind!r})")
    config, _ = parse_descriptor(document.get("config"), what=what)
    layers = document.get("layers")
    if not isinstance(layers, list):
        raise InvalidArgument(f"{what} has no layer list")
    parsed = tuple(parse_descriptor(layer, what=what) for layer in layers)
    for _, layer_type in parsed:
        if layer_type not in LAYER_TYPES:
            raise InvalidArgument(f"{what} has a layer of unsupported media type {layer_type!r}")
    return Manifest(media_type=str(kind), config=config, layers=parsed)


def parse_index(data: bytes, *, what: str = "index") -> list[IndexEntry]:
    document = loads_object(data, what=what)
    entries = document.get("manifests")
    if document.get("schemaVersion") != 2 or not isinstance(entries, list):
        raise InvalidArgument(f"{what} is not an image index")
    return [_index_entry(entry, what=what) for entry in entries]


def _index_entry(entry: Any, *, what: str) -> IndexEntry:
    descriptor, media_type = parse_descriptor(entry, what=what)
    annotations = entry.get("annotations") or {}
    platform_doc = entry.get("platform")
    if not isinstance(annotations, dict) or not all(
        isinstance(v, str) for v in annotations.values()
    ):
        raise InvalidArgument(f"{what} has malformed annotations")
    found = None
    if isinstance(platform_doc, dict):
        found = Platform(
            os=str(platform_doc.get("os", "")),
            architecture=str(platform_doc.get("architecture", "")),
            variant=str(platform_doc.get("variant", "")),
        )
    return IndexEntry(descriptor, media_type, found, annotations)


def host_platform() -> Platform:
    machine = platform.machine().lower()
    architecture = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)
    return Platform(os="linux", architecture=architecture)


def rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def config_diff_ids(config: Mapping[str, Any], *, what: str = "image config") -> list[Digest]:
    rootfs = config.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
        raise InvalidArgument(f"{what} has no rootfs of type layers")
    diff_ids = rootfs.get("diff_ids")
    if not isinstance(diff_ids, list):
        raise InvalidArgument(f"{what} has no diff_ids")
    try:
        return [parse_digest(diff_id) for diff_id in diff_ids]
    except InvalidArgument as error:
        raise InvalidArgument(f"{what}: {error.message}") from None


def new_image_config(
    diff_ids: Sequence[Digest],
    *,
    container_config: Mapping[str, Any],
    comment: str = "",
    created: float | None = None,
) -> dict[str, Any]:
    """The config of a one-layer image made by `import`."""
    when = rfc3339(time.time() if created is None else created)
    history: dict[str, Any] = {"created": when, "created_by": "pyswarm image import"}
    if comment:
        history["comment"] = comment
    config: dict[str, Any] = {
        "architecture": host_platform().architecture,
        "os": "linux",
        "created": when,
        "config": dict(container_config),
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [history],
    }
    if comment:
        config["comment"] = comment
    return config


def docker_config_view(config: Mapping[str, Any]) -> dict[str, Any]:
    """The `Config` field of `docker image inspect`: unset lists and maps are null,
    unset strings empty, and ExposedPorts/StopSignal left out when unset."""
    view: dict[str, Any] = {
        "User": config.get("User", ""),
        "Env": config.get("Env"),
        "Cmd": config.get("Cmd"),
        "Entrypoint": config.get("Entrypoint"),
        "WorkingDir": config.get("WorkingDir", ""),
        "Volumes": config.get("Volumes"),
        "Labels": config.get("Labels"),
    }
    for optional in ("ExposedPorts", "StopSignal"):
        if config.get(optional):
            view[optional] = config[optional]
    return view

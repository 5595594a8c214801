"""What the image store knows about an image: the public `Image`, and the `Record`
it keeps in `images/<config hex>.json`.

An image is identified by the digest of its config blob. Its layers are described by
the blob as stored (`digest`, `size`, `media_type`) and by the digest of the
uncompressed tar (`diff_id`), which names its unpacked directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .blobs import Descriptor, Digest, parse_digest
from .reference import parse_reference


@dataclass(frozen=True)
class LayerDescriptor:
    digest: Digest  # of the blob as stored (usually gzip)
    size: int
    media_type: str
    diff_id: Digest  # of the uncompressed tar

    @property
    def blob(self) -> Descriptor:
        return Descriptor(digest=self.digest, size=self.size)

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "size": self.size,
            "media_type": self.media_type,
            "diff_id": self.diff_id,
        }


@dataclass(frozen=True)
class Image:
    id: Digest
    repo_tags: list[str]
    created: float
    size: int
    config: dict[str, Any]
    manifest_digest: Digest
    layers: tuple[LayerDescriptor, ...]

    @property
    def repo_digests(self) -> list[str]:
        names = {parse_reference(tag).name for tag in self.repo_tags}
        return sorted(f"{name}@{self.manifest_digest}" for name in names)


@dataclass(frozen=True)
class RemoveResult:
    untagged: list[str]
    deleted: list[str]


@dataclass(frozen=True)
class Record:
    """`images/<hex>.json`, plus the config read from its blob."""

    id: Digest
    manifest_digest: Digest
    layers: tuple[LayerDescriptor, ...]
    created: float
    config: dict[str, Any]

    @property
    def blobs(self) -> set[Digest]:
        return {self.id, self.manifest_digest, *(layer.digest for layer in self.layers)}

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "manifest_digest": self.manifest_digest,
            "layers": [layer.to_json() for layer in self.layers],
            "created": self.created,
        }

    @classmethod
    def from_json(cls, document: dict[str, Any], *, config: dict[str, Any]) -> Record:
        """Parse what `to_json` wrote (KeyError, ValueError, InvalidArgument if it is
        not that)."""
        layers = tuple(
            LayerDescriptor(
                digest=parse_digest(layer["digest"]),
                size=int(layer["size"]),
                media_type=str(layer["media_type"]),
                diff_id=parse_digest(layer["diff_id"]),
            )
            for layer in document["layers"]
        )
        return cls(
            id=parse_digest(document["id"]),
            manifest_digest=parse_digest(document["manifest_digest"]),
            layers=layers,
            created=float(document["created"]),
            config=config,
        )

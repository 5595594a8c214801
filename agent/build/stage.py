"""A build stage's state, and the shape of a Dockerfile's stages.

A `Stage` is where one `FROM ... [AS name]` has got to: the image of its last step
(None until a FROM scratch stage commits one), that image's config and layers, and
what is not in the config: the ARGs declared in it, and whether CMD was set in it
(ENTRYPOINT clears an inherited CMD, not one set in the same stage, as docker).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from api.errors import InvalidArgument

from ..images import oci
from ..images.blobs import Descriptor, Digest
from ..images.store import Image
from . import metadata
from .dockerfile import Instruction

Layer = tuple[Descriptor, Digest]


@dataclass
class Stage:
    index: int
    name: str
    image: Image | None = None
    config: dict[str, Any] = field(default_factory=dict)
    layers: list[Layer] = field(default_factory=list)
    args: dict[str, str] = field(default_factory=dict)  # declared ARGs with a value
    cmd_set: bool = False

    def adopt(self, image: Image) -> None:
        self.image = image
        self.config = copy.deepcopy(image.config)
        self.layers = [(layer.blob, layer.diff_id) for layer in image.layers]

    @property
    def parent(self) -> str:
        return self.image.id if self.image is not None else "scratch"

    @property
    def container(self) -> dict[str, Any]:
        inner: dict[str, Any] = self.config.setdefault("config", {})
        return inner

    @property
    def env(self) -> dict[str, str]:
        pairs = (item.partition("=") for item in self.container.get("Env") or [])
        return {key: value for key, _, value in pairs}

    @property
    def shell(self) -> list[str]:
        return list(self.container.get("Shell") or metadata.DEFAULT_SHELL)

    @property
    def workdir(self) -> str:
        return str(self.container.get("WorkingDir") or "/")


def scratch_config() -> dict[str, Any]:
    return {
        "architecture": oci.host_platform().architecture,
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [],
    }


def split_stages(
    instructions: list[Instruction],
) -> tuple[list[Instruction], list[list[Instruction]]]:
    """(ARGs before the first FROM, then one list per stage starting with its FROM)."""
    if not instructions:
        raise InvalidArgument("the Dockerfile cannot be empty")
    meta: list[Instruction] = []
    stages: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.command == "FROM":
            stages.append([instruction])
        elif stages:
            stages[-1].append(instruction)
        elif instruction.command == "ARG":
            meta.append(instruction)
        else:
            raise InvalidArgument(
                f"Dockerfile must begin with FROM (line {instruction.line}: "
                f"{instruction.command}); only ARG may come before it"
            )
    if not stages:
        raise InvalidArgument("Dockerfile must begin with FROM: no build stage in it")
    return meta, stages


def parse_from(text: str) -> tuple[str, str]:
    """`image [AS name]` → (image, lower-case name or "")."""
    parts = text.split()
    if len(parts) == 1:
        return parts[0], ""
    if len(parts) == 3 and parts[1].upper() == "AS":
        return parts[0], parts[2].lower()
    raise InvalidArgument(f"FROM requires either one or three arguments: FROM {text}")


def short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]

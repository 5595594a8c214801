"""Checking a container's request before anything is made, and what the engine needs
from the image and volume stores (as protocols, so tests can pass small fakes).

Everything here is pure: `validate_config` reads the filesystem only to check that a
bind source exists, and raises `InvalidArgument` with docker's words otherwise.
"""

from __future__ import annotations

import re
import secrets
import signal as signals
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Protocol

from api import engine_pb2
from api.errors import InvalidArgument

from . import restart, spec

NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
NETWORK_MODES = ("", "none", "host", "bridge")


class Images(Protocol):
    def resolve(self, ref: str) -> Any: ...
    def layer_dirs(self, image: Any) -> list[Path]: ...


class Volumes(Protocol):
    def create(
        self, name: str | None, *, labels: dict[str, str] | None = None, anonymous: bool = False
    ) -> Any: ...
    def get(self, name: str) -> Any: ...
    def mountpoint(self, name: str) -> Path: ...
    def remove(self, name: str, *, force: bool, users: Callable[[str], list[str]]) -> None: ...


def parse_signal(value: str) -> int:
    """A signal by name (with or without SIG) or number, as `docker kill -s`."""
    text = value.strip().upper()
    if text.isdigit():
        num = int(text)
        if 0 < num < 65:
            return num
    else:
        name = text if text.startswith("SIG") else "SIG" + text
        sig = getattr(signals.Signals, name, None)
        if sig is not None:
            return int(sig)
    raise InvalidArgument(f"invalid signal: {value}")


def generate_name(taken: Collection[str]) -> str:
    """A docker-like `adjective_scientist_N` name not in `taken`."""
    left = ("brave", "calm", "eager", "happy", "jolly", "keen", "lucid", "quirky", "witty")
    right = ("turing", "hopper", "lovelace", "ritchie", "thompson", "knuth", "liskov")
    while True:
        name = f"{secrets.choice(left)}_{secrets.choice(right)}_{secrets.randbelow(1000)}"
        if name not in taken:
            return name


def validate_config(config: engine_pb2.ContainerConfig) -> None:
    if config.name and not NAME_RE.match(config.name):
        raise InvalidArgument(
            f"Invalid container name ({config.name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )
    # Other names are the swarm's attachable overlays, looked up when the container starts.
    if config.network not in NETWORK_MODES and not NAME_RE.match(config.network):
        raise InvalidArgument(f"network {config.network} not found (use none, host or bridge)")
    if config.restart.name not in ("", *restart.POLICIES):
        raise InvalidArgument(f"invalid restart policy: {config.restart.name}")
    if config.auto_remove and config.restart.name not in ("", "no"):
        raise InvalidArgument("can't create 'AutoRemove' container with restart policy")
    if config.stop_signal:
        parse_signal(config.stop_signal)
    for m in config.mounts:
        _validate_mount(m)
    try:
        spec.capabilities(add=list(config.cap_add), drop=list(config.cap_drop))
    except spec.CapabilityError as exc:
        raise InvalidArgument(str(exc)) from None


def _validate_mount(m: engine_pb2.Mount) -> None:
    if m.type not in ("bind", "volume", "tmpfs"):
        raise InvalidArgument(f"invalid mount type: {m.type}")
    if not m.target.startswith("/"):
        raise InvalidArgument(f"invalid mount config: mount path must be absolute: {m.target}")
    if m.type == "bind" and not Path(m.source).exists():
        raise InvalidArgument(
            f'invalid mount config for type "bind": bind source path does not exist: {m.source}'
        )

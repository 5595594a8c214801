"""docker's `--change` instructions: the Dockerfile subset `import` applies to an image config.

`apply_changes(config, ["CMD [\"sh\"]", "ENV A=1"])` returns a new container config
(the `config` object of an OCI image config: Cmd, Entrypoint, Env, WorkingDir, User,
Labels, ExposedPorts, Volumes, StopSignal); the input is not modified. Instructions are
case-insensitive; CMD and ENTRYPOINT take the JSON (exec) form or the shell form, which
becomes `["/bin/sh", "-c", TEXT]`. Any other instruction is InvalidArgument, as docker.
"""

from __future__ import annotations

import copy
import json
import posixpath
import shlex
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from api.errors import InvalidArgument

_PROTOCOLS = ("tcp", "udp", "sctp")

Config = dict[str, Any]


def apply_changes(config: Mapping[str, Any], changes: Sequence[str]) -> Config:
    result = copy.deepcopy(dict(config))
    cmd_set = False
    for change in changes:
        word, *args = change.split(None, 1) or [""]
        rest = args[0] if args else ""
        instruction = word.upper()
        handler = _HANDLERS.get(instruction)
        if handler is None:
            raise InvalidArgument(f"{instruction or 'an empty line'} is not a valid change command")
        if not rest.strip():
            raise InvalidArgument(f"{instruction} requires at least one argument")
        handler(result, rest.strip())
        cmd_set = cmd_set or instruction == "CMD"
        if instruction == "ENTRYPOINT" and not cmd_set:
            # as in a Dockerfile, a new ENTRYPOINT drops a CMD it did not set itself
            result.pop("Cmd", None)
    return result


def _exec_form(text: str) -> list[str]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return ["/bin/sh", "-c", text]


def _cmd(config: Config, text: str) -> None:
    config["Cmd"] = _exec_form(text)


def _entrypoint(config: Config, text: str) -> None:
    config["Entrypoint"] = _exec_form(text)


def pairs(instruction: str, text: str) -> list[tuple[str, str]]:
    """`K=V K2="v 2"`, or the legacy single `K value with spaces` (ENV, LABEL)."""
    first = text.split(None, 1)
    if not first:
        raise InvalidArgument(f"{instruction} requires at least one argument")
    if "=" not in first[0]:
        if len(first) < 2:
            raise InvalidArgument(f"{instruction} names must be followed by a value: {text}")
        return [(first[0], first[1].strip())]
    try:
        words = shlex.split(text)
    except ValueError as error:
        raise InvalidArgument(f"{instruction} {text}: {error}") from None
    pairs = []
    for word in words:
        key, sign, value = word.partition("=")
        if not key or not sign:
            raise InvalidArgument(f"{instruction} expects KEY=VALUE pairs: {text}")
        pairs.append((key, value))
    return pairs


def _env(config: Config, text: str) -> None:
    env = list(config.get("Env") or [])
    for key, value in pairs("ENV", text):
        env = [item for item in env if item.partition("=")[0] != key]
        env.append(f"{key}={value}")
    config["Env"] = env


def _label(config: Config, text: str) -> None:
    labels = dict(config.get("Labels") or {})
    labels.update(pairs("LABEL", text))
    config["Labels"] = labels


def _workdir(config: Config, text: str) -> None:
    config["WorkingDir"] = posixpath.normpath(posixpath.join(config.get("WorkingDir") or "/", text))


def _user(config: Config, text: str) -> None:
    config["User"] = text


def _stopsignal(config: Config, text: str) -> None:
    if len(text.split()) != 1:
        raise InvalidArgument(f"STOPSIGNAL takes one signal: {text}")
    config["StopSignal"] = text


def _expose(config: Config, text: str) -> None:
    ports = dict(config.get("ExposedPorts") or {})
    for word in text.split():
        for port in _ports(word):
            ports[port] = {}
    config["ExposedPorts"] = ports


def _ports(word: str) -> list[str]:
    spec, _, protocol = word.partition("/")
    protocol = protocol.lower() or "tcp"
    first, _, last = spec.partition("-")
    try:
        low, high = int(first), int(last or first)
    except ValueError:
        raise InvalidArgument(f"invalid port in EXPOSE: {word}") from None
    if protocol not in _PROTOCOLS or not 0 < low <= high <= 65535:
        raise InvalidArgument(f"invalid port in EXPOSE: {word}")
    return [f"{port}/{protocol}" for port in range(low, high + 1)]


def _volume(config: Config, text: str) -> None:
    paths = _exec_form(text) if text.startswith("[") else text.split()
    if paths[:2] == ["/bin/sh", "-c"] or not all(paths):
        raise InvalidArgument(f"VOLUME takes paths: {text}")
    volumes = dict(config.get("Volumes") or {})
    volumes.update({path: {} for path in paths})
    config["Volumes"] = volumes


_HANDLERS: dict[str, Callable[[Config, str], None]] = {
    "CMD": _cmd,
    "ENTRYPOINT": _entrypoint,
    "ENV": _env,
    "LABEL": _label,
    "WORKDIR": _workdir,
    "USER": _user,
    "STOPSIGNAL": _stopsignal,
    "EXPOSE": _expose,
    "VOLUME": _volume,
}

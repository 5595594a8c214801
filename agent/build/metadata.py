"""Instructions that only change the image config: CMD, ENTRYPOINT, ENV, LABEL, USER,
WORKDIR, EXPOSE, VOLUME, STOPSIGNAL, SHELL, HEALTHCHECK.

`apply(config, instruction, text, shell=...)` changes the OCI image config's `config`
object in place; `text` is the instruction's argument after substitution (for the
instructions docker substitutes). Shell-form CMD/ENTRYPOINT/HEALTHCHECK use the
stage's SHELL, as docker does. ENV, LABEL, EXPOSE, VOLUME and STOPSIGNAL share their
rules with `import --change` (`agent.images.changes`).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from api.errors import InvalidArgument

from ..images.changes import apply_changes
from .dockerfile import json_array

DEFAULT_SHELL = ("/bin/sh", "-c")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9,
            "h": 3600 * 10**9}  # fmt: skip

Config = dict[str, Any]


def command_form(text: str, *, shell: Sequence[str]) -> list[str]:
    """Exec form (a JSON string array) as is; shell form through the stage's shell."""
    array = json_array(text)
    return array if array is not None else [*shell, text]


def _cmd(config: Config, text: str, shell: Sequence[str], flags: Mapping[str, str]) -> None:
    config["Cmd"] = command_form(text, shell=shell)


def _entrypoint(config: Config, text: str, shell: Sequence[str], flags: Mapping[str, str]) -> None:
    config["Entrypoint"] = command_form(text, shell=shell)


def _user(config: Config, text: str, shell: Sequence[str], flags: Mapping[str, str]) -> None:
    if not text.strip():
        raise InvalidArgument("USER requires exactly one argument")
    config["User"] = text.strip()


def _workdir(config: Config, text: str, shell: Sequence[str], flags: Mapping[str, str]) -> None:
    if not text.strip():
        raise InvalidArgument("WORKDIR requires exactly one argument")
    base = config.get("WorkingDir") or "/"
    config["WorkingDir"] = posixpath.normpath(posixpath.join(base, text.strip()))


def _shell(config: Config, text: str, shell: Sequence[str], flags: Mapping[str, str]) -> None:
    array = json_array(text)
    if not array:
        raise InvalidArgument("SHELL requires the arguments to be in JSON form")
    config["Shell"] = array


def _via_changes(command: str) -> Callable[[Config, str, Sequence[str], Mapping[str, str]], None]:
    def handler(config: Config, text: str, shell: Sequence[str], flags: Mapping[str, str]) -> None:
        updated = apply_changes(config, [f"{command} {text}"])
        config.clear()
        config.update(updated)

    return handler


def _healthcheck(config: Config, text: str, shell: Sequence[str], flags: Mapping[str, str]) -> None:
    kind, _, rest = text.strip().partition(" ")
    if kind.upper() == "NONE":
        config["Healthcheck"] = {"Test": ["NONE"]}
        return
    if kind.upper() != "CMD" or not rest.strip():
        raise InvalidArgument(f'Unknown type "{kind}" in HEALTHCHECK (try CMD)')
    array = json_array(rest)
    check: dict[str, Any] = {"Test": ["CMD", *array] if array else ["CMD-SHELL", rest.strip()]}
    for flag, key in (("interval", "Interval"), ("timeout", "Timeout"),
                      ("start-period", "StartPeriod"), ("start-interval", "StartInterval")):  # fmt: skip
        if flag in flags:
            check[key] = parse_duration(flags[flag], flag=flag)
    if "retries" in flags:
        if not flags["retries"].isdigit():
            raise InvalidArgument(f"HEALTHCHECK --retries must be a number: {flags['retries']}")
        check["Retries"] = int(flags["retries"])
    config["Healthcheck"] = check


def parse_duration(text: str, *, flag: str) -> int:
    """Go's duration syntax (`30s`, `1m30s`, `500ms`) → nanoseconds."""
    position, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT_NS[match.group(2)]
        position = match.end()
    if position != len(text) or not text:
        raise InvalidArgument(f"HEALTHCHECK --{flag}: invalid duration {text!r}")
    return int(total)


HANDLERS: dict[str, Callable[[Config, str, Sequence[str], Mapping[str, str]], None]] = {
    "CMD": _cmd,
    "ENTRYPOINT": _entrypoint,
    "ENV": _via_changes("ENV"),
    "LABEL": _via_changes("LABEL"),
    "USER": _user,
    "WORKDIR": _workdir,
    "SHELL": _shell,
    "HEALTHCHECK": _healthcheck,
    "EXPOSE": _via_changes("EXPOSE"),
    "VOLUME": _via_changes("VOLUME"),
    "STOPSIGNAL": _via_changes("STOPSIGNAL"),
}


def apply(
    config: Config,
    command: str,
    text: str,
    *,
    shell: Sequence[str] = DEFAULT_SHELL,
    flags: Mapping[str, str] | None = None,
) -> None:
    HANDLERS[command](config, text, shell, flags or {})

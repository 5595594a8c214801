"""Pure parsers for the `pyswarm` flags, in docker's syntax and with docker's messages.

Each parser takes the flag's string (and, where docker reads the client's environment or
the clock, those as parameters) and returns plain values; a bad value raises
`ValueError` with docker's reason, e.g. `parse_memory("12q")` raises
`ValueError("invalid size: '12q'")`. `FlagType` adapts a parser to click, which then
reports one line, `invalid argument "12q" for "-m, --memory" flag: invalid size: '12q'`,
as a `click.UsageError` (`cli.main` turns it into exit 125 for run/create, 1 elsewhere).

    >>> parse_publish("127.0.0.1:8080:80/udp")
    PortSpec(host_ip='127.0.0.1', host_port=8080, container_port=80, protocol='udp')
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Generic, NamedTuple, TypeVar

import click

T = TypeVar("T")

MOUNT_TYPES = ("bind", "volume", "tmpfs")
RESTART_POLICIES = ("no", "on-failure", "always", "unless-stopped")
PROTOCOLS = ("tcp", "udp")
# Options of `--tmpfs` that the engine applies anyway (docker's defaults) or can express.
TMPFS_FLAGS = ("rw", "ro", "noexec", "nosuid", "nodev")


class MountSpec(NamedTuple):
    type: str  # bind | volume | tmpfs
    source: str  # host path (bind), volume name (volume; "" = anonymous), "" (tmpfs)
    target: str
    read_only: bool = False
    tmpfs_size: int = 0
    tmpfs_mode: int = 0


class PortSpec(NamedTuple):
    host_ip: str  # "" = all addresses
    host_port: int  # 0 = a free port
    container_port: int
    protocol: str = "tcp"


class RestartSpec(NamedTuple):
    name: str = "no"
    max_retries: int = 0


class FlagType(click.ParamType, Generic[T]):  # type: ignore[type-arg]  # generic in click 8.2+
    """A click type that runs a parser and reports its `ValueError` docker's way."""

    def __init__(self, name: str, parser: Callable[[str], T]) -> None:
        self.name = name
        self.parser = parser

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return self.name

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> T:
        if not isinstance(value, str):
            return value  # type: ignore[no-any-return]  # a default, already parsed
        try:
            return self.parser(value)
        except ValueError as e:
            flag = ", ".join(param.opts) if param is not None else self.name
            raise click.UsageError(invalid_argument(value, flag, str(e)), ctx) from None


def invalid_argument(value: str, flag: str, reason: str) -> str:
    return f'invalid argument "{value}" for "{flag}" flag: {reason}'


# ---- sizes, numbers, durations ----------------------------------------------------

# Patterns are compiled on first use (re caches them), not at import: start-up time.
_SIZE = r"(\d+(?:\.\d+)?) ?([kKmMgGtTpP])?[iI]?[bB]?"
_BINARY = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_memory(value: str) -> int:
    """`512m`, `1g`, `1.5GiB`, `100` (bytes): binary multiples, as go-units RAMInBytes."""
    match = re.fullmatch(_SIZE, value)
    if match is None:
        raise ValueError(f"invalid size: '{value}'")
    number, unit = match.groups()
    return int(float(number) * _BINARY.get((unit or "").lower(), 1))


def parse_cpus(value: str) -> int:
    """`1.5` CPUs -> 1_500_000_000 nano CPUs (exact, as docker's rational parsing)."""
    from decimal import Decimal, InvalidOperation

    try:
        cpus = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"failed to parse {value} as a rational number") from None
    nanos = cpus * 1_000_000_000
    if not cpus.is_finite() or cpus < 0:
        raise ValueError(f"failed to parse {value} as a rational number")
    if nanos != nanos.to_integral_value():
        raise ValueError("value is too precise")
    return int(nanos)


def parse_int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f'strconv.ParseInt: parsing "{value}": invalid syntax') from None


def parse_pids_limit(value: str) -> int:
    """docker's `--pids-limit`: 0 or -1 is unlimited, which the API spells 0."""
    return max(parse_int(value), 0)


def parse_tail(value: str) -> int:
    """`--tail all` or a count; -1 means all lines, as LogsRequest.tail."""
    if value == "all":
        return -1
    count = parse_int(value)
    return count if count >= 0 else -1


_DURATION_PART = r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)"
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(value: str) -> float:
    """Go's time.ParseDuration (`10m`, `1h30m`, `1.5s`, `0`) in seconds."""
    if value == "0":
        return 0.0
    pos, total = 0, 0.0
    pattern = re.compile(_DURATION_PART)
    while pos < len(value):
        part = pattern.match(value, pos)
        if part is None:
            break
        total += float(part.group(1)) * _DURATION_UNITS[part.group(2)]
        pos = part.end()
    if not value or pos != len(value):
        raise ValueError(f'time: invalid duration "{value}"')
    return total


_UNIX_TIME = r"\d+(?:\.\d+)?"


def parse_since(value: str, *, now: float) -> float:
    """docker's `--since`: a duration before `now`, an RFC 3339 date/time, or unix time.

    A date or time without a zone is local time, as docker's.
    """
    if value != "0":
        try:
            return now - parse_duration(value)
        except ValueError:
            pass
    if re.fullmatch(_UNIX_TIME, value):
        return float(value)
    try:
        return _parse_rfc3339(value)
    except ValueError:
        raise ValueError(f'failed to parse value as time or duration: "{value}"') from None


def _parse_rfc3339(value: str) -> float:
    from datetime import datetime

    text = value.replace("z", "Z").replace("Z", "+00:00")
    # Python keeps microseconds; docker accepts nanoseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()
    return parsed.timestamp()


def parse_signal(value: str) -> str:
    """`KILL`, `SIGKILL`, `sigkill`, `9` -> `SIGKILL`, `9` (the names the engine knows)."""
    import signal

    text = value.strip()
    if text.isdigit() and 1 <= int(text) <= 64:
        return text
    name = text.upper() if text.upper().startswith("SIG") else "SIG" + text.upper()
    if name in signal.Signals.__members__:
        return name
    raise ValueError(f"invalid signal: {value}")


def parse_restart(value: str) -> RestartSpec:
    """`no`, `always`, `unless-stopped`, `on-failure`, `on-failure:N`."""
    name, sep, count = value.partition(":")
    name = name or "no"
    if name not in RESTART_POLICIES:
        raise ValueError(f"invalid restart policy '{name}'")
    if not sep:
        return RestartSpec(name=name)
    if name != "on-failure":
        raise ValueError("maximum retry count can only be used with 'on-failure'")
    if not count.isdigit():
        raise ValueError(f"maximum retry count must be an integer: '{count}'")
    return RestartSpec(name=name, max_retries=int(count))


# ---- ports ----------------------------------------------------------------------


def parse_publish(value: str) -> PortSpec:
    """`-p [IP:][HOST:]CONTAINER[/PROTO]`; `[::1]:8080:80` for IPv6; no ranges."""
    spec, _, protocol = value.partition("/")
    protocol = protocol.lower() or "tcp"
    if protocol not in PROTOCOLS:
        raise ValueError(f"invalid proto: {protocol}")
    host_ip, rest = _split_ip(spec)
    parts = rest.split(":") if rest else []
    if not 1 <= len(parts) <= 2 or (host_ip and len(parts) != 2):
        raise ValueError(f"invalid port format: '{value}'")
    if any("-" in part for part in parts):
        raise ValueError(f"port ranges are not supported: '{value}'")
    host_port = _port(parts[0], "hostPort", allow_zero=True) if len(parts) == 2 else 0
    container_port = _port(parts[-1], "containerPort", allow_zero=False)
    return PortSpec(host_ip, host_port, container_port, protocol)


def _split_ip(spec: str) -> tuple[str, str]:
    if spec.startswith("["):
        address, bracket, rest = spec[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError(f"invalid IP address: {spec}")
        return _ip(address), rest[1:]
    if spec.count(":") == 2:
        address, _, rest = spec.partition(":")
        return _ip(address), rest
    return "", spec


def _ip(address: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        raise ValueError(f"invalid IP address: {address}") from None


def _port(text: str, what: str, *, allow_zero: bool) -> int:
    if text == "" and allow_zero:
        return 0
    if not text.isdigit() or not (0 if allow_zero else 1) <= int(text) <= 65535:
        raise ValueError(f"invalid {what}: {text}")
    return int(text)


# ---- mounts ---------------------------------------------------------------------


def parse_volume(value: str) -> MountSpec:
    """`-v [SRC:]DST[:ro|rw]`: a SRC starting with `/` binds a host path, else a volume."""
    parts = value.split(":")
    if len(parts) > 3 or not all(parts[:2]):
        raise ValueError(f"invalid volume specification: '{value}'")
    source, target = ("", parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    read_only = False
    for mode in parts[2].split(",") if len(parts) == 3 else ():
        if mode not in ("ro", "rw"):
            raise ValueError(f"invalid mode: {mode}")
        read_only = mode == "ro"
    if not target.startswith("/"):
        raise ValueError(f"invalid volume specification: '{value}': mount path must be absolute")
    kind = "bind" if source.startswith("/") else "volume"
    return MountSpec(kind, source, target, read_only=read_only)


_MOUNT_KEYS = {
    "type": "type",
    "source": "source",
    "src": "source",
    "target": "target",
    "destination": "target",
    "dst": "target",
    "readonly": "readonly",
    "ro": "readonly",
    "tmpfs-size": "tmpfs-size",
    "tmpfs-mode": "tmpfs-mode",
}


def parse_mount(value: str) -> MountSpec:
    """`--mount type=bind|volume|tmpfs,source=,target=,readonly,tmpfs-size=,tmpfs-mode=`."""
    fields: dict[str, str] = {}
    for field in value.split(","):
        key, sep, val = field.partition("=")
        key = _MOUNT_KEYS.get(key.strip().lower(), key)
        if not sep and key != "readonly":
            raise ValueError(f"invalid field '{field}' must be a key=value pair")
        if key not in _MOUNT_KEYS.values():
            raise ValueError(f"unexpected key '{key}' in '{field}'")
        fields[key] = val if sep else "true"
    return _mount_from_fields(fields)


def _mount_from_fields(fields: dict[str, str]) -> MountSpec:
    kind = fields.get("type", "volume")
    if kind not in MOUNT_TYPES:
        raise ValueError(f"type '{kind}' is not valid")
    source, target = fields.get("source", ""), fields.get("target", "")
    if not target:
        raise ValueError("target is required")
    if kind == "bind" and not source:
        raise ValueError("source is required when specifying bind mounts")
    if kind == "tmpfs" and source:
        raise ValueError("source is not supported for tmpfs mounts")
    if kind != "tmpfs" and ("tmpfs-size" in fields or "tmpfs-mode" in fields):
        raise ValueError(f"cannot mix 'tmpfs-*' options with mount type '{kind}'")
    return MountSpec(
        kind,
        source,
        target,
        read_only=_parse_bool(fields.get("readonly", "false"), "readonly"),
        tmpfs_size=parse_memory(fields["tmpfs-size"]) if "tmpfs-size" in fields else 0,
        tmpfs_mode=_parse_mode(fields.get("tmpfs-mode", "0")),
    )


def _parse_bool(text: str, key: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true"):
        return True
    if lowered in ("0", "false"):
        return False
    raise ValueError(f"invalid value for {key}: {text}")


def _parse_mode(text: str) -> int:
    try:
        return int(text, 8)
    except ValueError:
        raise ValueError(f"invalid mode: {text}") from None


def parse_tmpfs(value: str) -> MountSpec:
    """`--tmpfs /path[:size=64m,mode=1777,ro]`."""
    target, _, options = value.partition(":")
    if not target.startswith("/"):
        raise ValueError(f"invalid mount path: '{target}' mount path must be absolute")
    size, mode, read_only = 0, 0, False
    for option in options.split(",") if options else ():
        key, sep, val = option.partition("=")
        if key == "size" and sep:
            size = parse_memory(val)
        elif key == "mode" and sep:
            mode = _parse_mode(val)
        elif option in ("ro", "rw"):
            read_only = option == "ro"
        elif option not in TMPFS_FLAGS:
            raise ValueError(f"unsupported tmpfs option: '{option}'")
    return MountSpec("tmpfs", "", target, read_only=read_only, tmpfs_size=size, tmpfs_mode=mode)


# ---- environment and labels -----------------------------------------------------


def parse_env(value: str, environ: Mapping[str, str]) -> str | None:
    """`K=V` as given; `K` alone takes the client's value, or is dropped when unset."""
    key, sep, _ = value.partition("=")
    if not key:
        raise ValueError(f"invalid environment variable: {value}")
    if any(c.isspace() for c in key):
        raise ValueError(f"variable '{key}' contains whitespaces")
    if sep:
        return value
    return f"{key}={environ[key]}" if key in environ else None


def parse_env_file(text: str, environ: Mapping[str, str]) -> list[str]:
    """An env file: `K=V` or `K` lines; blank lines and `#` comments skipped."""
    entries = []
    for line in text.splitlines():
        line = line.lstrip()
        if not line or line.startswith("#"):
            continue
        entry = parse_env(line, environ)
        if entry is not None:
            entries.append(entry)
    return entries


def parse_label(value: str) -> tuple[str, str]:
    """`k=v`, or `k` for an empty value."""
    key, _, val = value.partition("=")
    if not key.strip():
        raise ValueError(f"invalid label format: '{value}'")
    return key, val


def read_env_file(path: str, environ: Mapping[str, str]) -> list[str]:
    """`--env-file PATH` (reads the file; the one parser here that does I/O)."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as e:
        raise ValueError(f"open {path}: {(e.strerror or str(e)).lower()}") from None
    return parse_env_file(text, environ)

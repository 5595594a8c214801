"""The OCI runtime spec (config.json) for a container: a pure function of its inputs.

Docker's defaults are the reference: the default capability set, masked and
read-only /proc paths, a minimal /dev, the device cgroup allow-list, and resources
from `--memory`, `--cpus` and `--pids-limit`. The engine resolves everything that
needs the filesystem (user, command path) before calling `build_spec`, so this
module reads no file and is tested as plain data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_CAPS = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

ALL_CAPS = (
    *DEFAULT_CAPS,
    "CAP_DAC_READ_SEARCH",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_LEASE",
    "CAP_AUDIT_CONTROL",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)

MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)

READONLY_PATHS = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CPU_PERIOD_US = 100_000
NEW_NETNS = ""  # netns_path meaning "a new, empty network namespace"


class CapabilityError(ValueError):
    """An unknown capability name in --cap-add/--cap-drop."""


def normalize_cap(name: str) -> str:
    cap = name.strip().upper()
    if cap == "ALL":
        return cap
    if not cap.startswith("CAP_"):
        cap = "CAP_" + cap
    if cap not in ALL_CAPS:
        raise CapabilityError(f"invalid capability: {name!r}")
    return cap


def capabilities(*, add: Sequence[str] = (), drop: Sequence[str] = ()) -> list[str]:
    """Docker's rule: start from the defaults, apply drops, then adds; ALL works for both."""
    adds = {normalize_cap(c) for c in add}
    drops = {normalize_cap(c) for c in drop}
    caps = set() if "ALL" in drops else set(DEFAULT_CAPS) - drops
    caps |= set(ALL_CAPS) if "ALL" in adds else adds
    return sorted(caps)


@dataclass(frozen=True)
class SpecMount:
    """A mount in the container: bind (source on the host), tmpfs, or the engine's files."""

    destination: str
    type: str  # bind | tmpfs
    source: str = ""
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 0
    nano_cpus: int = 0
    pids_limit: int = 0


@dataclass(frozen=True)
class ProcessSpec:
    args: Sequence[str]
    env: Sequence[str]
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    additional_gids: Sequence[int] = ()
    caps: Sequence[str] = DEFAULT_CAPS


@dataclass(frozen=True)
class ContainerSpec:
    """Everything `build_spec` needs, already resolved by the engine."""

    process: ProcessSpec
    hostname: str
    cgroups_path: str
    # None: share the host's network namespace; NEW_NETNS: a fresh one made by the
    # runtime (only lo, which the runtime brings up); otherwise a path to join.
    netns_path: str | None
    read_only: bool = False
    mounts: Sequence[SpecMount] = ()
    limits: Limits = Limits()
    annotations: Mapping[str, str] = field(default_factory=dict)


def process_json(proc: ProcessSpec) -> dict[str, Any]:
    caps = list(proc.caps)
    return {
        "terminal": False,
        "user": {
            "uid": proc.uid,
            "gid": proc.gid,
            "additionalGids": list(proc.additional_gids),
        },
        "args": list(proc.args),
        "env": list(proc.env),
        "cwd": proc.cwd or "/",
        "capabilities": {
            "bounding": caps,
            "effective": caps,
            "permitted": caps,
        },
        "noNewPrivileges": False,
    }


def _base_mounts() -> list[dict[str, Any]]:
    return [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
        },
    ]


def _mount_json(m: SpecMount) -> dict[str, Any]:
    if m.type == "bind":
        return {
            "destination": m.destination,
            "type": "bind",
            "source": m.source,
            "options": ["rbind", "rprivate", *m.options],
        }
    return {
        "destination": m.destination,
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["nosuid", "nodev", *m.options],
    }


def _devices() -> list[dict[str, Any]]:
    # Docker's device cgroup allow-list: deny all, then the usual character devices.
    allow = [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2), (136, -1)]
    rules: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}]
    for major, minor in allow:
        rule: dict[str, Any] = {"allow": True, "type": "c", "major": major, "access": "rwm"}
        if minor >= 0:
            rule["minor"] = minor
        rules.append(rule)
    return rules


def _resources(limits: Limits) -> dict[str, Any]:
    res: dict[str, Any] = {"devices": _devices()}
    if limits.memory_bytes:
        res["memory"] = {"limit": limits.memory_bytes, "swap": limits.memory_bytes}
    if limits.nano_cpus:
        quota = limits.nano_cpus * CPU_PERIOD_US // 1_000_000_000
        res["cpu"] = {"quota": max(quota, 1000), "period": CPU_PERIOD_US}
    if limits.pids_limit:
        res["pids"] = {"limit": limits.pids_limit}
    return res


def _namespaces(netns_path: str | None) -> list[dict[str, str]]:
    spaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if netns_path == NEW_NETNS:
        spaces.append({"type": "network"})
    elif netns_path is not None:
        spaces.append({"type": "network", "path": netns_path})
    return spaces


def build_spec(spec: ContainerSpec) -> dict[str, Any]:
    """The config.json of the container's bundle (OCI runtime spec 1.0)."""
    return {
        "ociVersion": "1.0.2",
        "process": process_json(spec.process),
        "root": {"path": "rootfs", "readonly": spec.read_only},
        "hostname": spec.hostname,
        "mounts": _base_mounts() + [_mount_json(m) for m in spec.mounts],
        "annotations": dict(spec.annotations),
        "linux": {
            "cgroupsPath": spec.cgroups_path,
            "resources": _resources(spec.limits),
            "namespaces": _namespaces(spec.netns_path),
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }


def merge_env(image_env: Sequence[str], user_env: Sequence[str], *, hostname: str) -> list[str]:
    """Image env, then the user's (which wins), with PATH and HOSTNAME as docker sets them."""
    merged: dict[str, str] = {"PATH": DEFAULT_PATH, "HOSTNAME": hostname}
    for entry in (*image_env, *user_env):
        key, sep, value = entry.partition("=")
        if sep:
            merged[key] = value
    return [f"{k}={v}" for k, v in merged.items()]


def command_line(
    *,
    image_entrypoint: Sequence[str],
    image_cmd: Sequence[str],
    entrypoint: Sequence[str],
    entrypoint_set: bool,
    cmd: Sequence[str],
) -> list[str]:
    """Docker's rule: --entrypoint replaces the image's entrypoint and clears its CMD."""
    if entrypoint_set:
        return [*(e for e in entrypoint if e), *cmd]
    return [*image_entrypoint, *(cmd or image_cmd)]

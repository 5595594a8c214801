"""Host preparation: make this kernel's layout acceptable to the OCI runtime.

Run by `make install` and again by every `pyswarm daemon` at start-up, so a host
rebooted since install still works. Each step checks before it acts and is safe
to rerun; each change it makes is reported in one line.

Known quirk (DESIGN.md): on hybrid cgroup hosts, cgroup v1 controllers are mounted
under /sys/fs/cgroup and cgroup2 at /sys/fs/cgroup/unified. crun refuses to run
while cgroup2 still holds a controller ("cgroups in hybrid mode not supported");
mounting the missing v1 hierarchy moves the controller out of cgroup2.
"""

from __future__ import annotations

import enum
import os
import subprocess
import sys
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP2_SUPER_MAGIC = "cgroup2fs"


class CgroupMode(enum.Enum):
    V1 = "v1"
    HYBRID = "hybrid"
    V2 = "v2"


class HostPrepError(RuntimeError):
    """The host cannot run containers and we could not fix it."""


def _fstype(path: Path) -> str:
    out = subprocess.run(
        ["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, check=False
    )
    return out.stdout.strip()


def cgroup_mode(root: Path = CGROUP_ROOT) -> CgroupMode:
    """Detect the cgroup layout; never assumed (issue 2: hybrid and pure v2 hosts)."""
    if _fstype(root) == CGROUP2_SUPER_MAGIC:
        return CgroupMode.V2
    if (root / "unified").is_dir() and _fstype(root / "unified") == CGROUP2_SUPER_MAGIC:
        return CgroupMode.HYBRID
    return CgroupMode.V1


def _controllers_held_by_cgroup2(root: Path) -> list[str]:
    try:
        return (root / "unified" / "cgroup.controllers").read_text().split()
    except OSError:
        return []


def release_hybrid_controllers(root: Path = CGROUP_ROOT) -> list[str]:
    """Mount a v1 hierarchy for each controller cgroup2 still holds; return what changed."""
    done: list[str] = []
    for name in _controllers_held_by_cgroup2(root):
        target = root / name
        target.mkdir(exist_ok=True)
        res = subprocess.run(
            ["mount", "-t", "cgroup", "-o", name, "cgroup", str(target)],
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0:
            raise HostPrepError(
                f"cgroup2 holds the {name} controller and mounting it as cgroup v1 at "
                f"{target} failed: {res.stderr.strip()}"
            )
        done.append(
            f"mounted cgroup v1 {name} at {target} (crun refuses hybrid cgroup2 controllers)"
        )
    return done


def ensure_overlayfs() -> list[str]:
    if "overlay" in Path("/proc/filesystems").read_text():
        return []
    res = subprocess.run(["modprobe", "overlay"], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise HostPrepError(f"overlayfs is not available and modprobe failed: {res.stderr.strip()}")
    return ["loaded the overlay kernel module"]


def prepare_host() -> list[str]:
    """Make the host ready; returns one line per change made (empty when nothing to do)."""
    if os.geteuid() != 0:
        raise HostPrepError("pyswarm must run as root (containers, cgroups and netlink need it)")
    changes = ensure_overlayfs()
    if cgroup_mode() is CgroupMode.HYBRID:
        changes += release_hybrid_controllers()
    return changes


def main() -> int:
    try:
        changes = prepare_host()
    except HostPrepError as exc:
        print(f"host preparation failed: {exc}", file=sys.stderr)
        return 1
    for line in changes:
        print(f"host preparation: {line}")
    print(f"host ready: cgroup {cgroup_mode().value}, overlayfs available")
    return 0


if __name__ == "__main__":
    sys.exit(main())

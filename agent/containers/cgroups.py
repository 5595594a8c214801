"""Reading a container's cgroup back: usage for `stats`, limits for tests, and cleanup.

crun creates each container's cgroup under the cgroups path given in config.json
(`/pyswarm/<id>`, cgroupfs manager). Where that lands depends on the host's layout,
detected once with `agent.hostprep.cgroup_mode`:

- v1 and hybrid: one directory per hierarchy, `/sys/fs/cgroup/<controller>/pyswarm/<id>`
  (memory, cpu, cpuacct, pids, ...; hybrid also mounts cgroup2 at `unified`, which holds
  no controller once host preparation has run);
- v2: one directory, `/sys/fs/cgroup/pyswarm/<id>`.

Numbers follow `docker stats`: memory usage excludes the inactive page cache
(`total_inactive_file` on v1, `inactive_file` on v2); an unlimited memory limit ("max",
or v1's near-2^63 sentinel) is reported as the host's total memory; a pids limit of 0
means unlimited. CPU percent is the CPU time used between two reads over the wall time
between them (100% = one CPU), which is what docker's system-time formula approximates.

Files that do not exist (a controller not enabled for the cgroup) read as 0 / unlimited;
a cgroup that does not exist at all raises FileNotFoundError.

`remove_cgroup` is the guarantee that nothing is left behind: it removes the cgroup in
every hierarchy, children first (a container may create sub-cgroups), retrying while
the kernel still reports it busy (a killed process not yet reaped).

Every function takes `layout=` so tests can point it at a fake tree:

    stats = read_stats("/pyswarm/" + cid)
    later = read_stats("/pyswarm/" + cid)
    cpu_percent(stats, later, os.cpu_count() or 1)
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypedDict

from agent.hostprep import CGROUP_ROOT, CgroupMode, cgroup_mode

PROC_MEMINFO = Path("/proc/meminfo")
# v1 reports "no limit" as PAGE_COUNTER_MAX pages (9223372036854771712 on x86-64).
V1_UNLIMITED = 1 << 62


@dataclass(frozen=True)
class CgroupLayout:
    """Where the cgroup files are: the mode and the root the hierarchies hang from."""

    mode: CgroupMode
    root: Path = CGROUP_ROOT
    meminfo: Path = PROC_MEMINFO

    @property
    def unified(self) -> bool:
        return self.mode is CgroupMode.V2

    def controller_dir(self, controller: str, cgroups_path: str) -> Path:
        """The directory of `cgroups_path` that holds `controller`'s files."""
        rel = _relative(cgroups_path)
        return self.root / rel if self.unified else self.root / controller / rel

    def hierarchies(self) -> list[Path]:
        """Every hierarchy's root directory (v1: one per mount, aliases skipped)."""
        if self.unified:
            return [self.root]
        return sorted(p for p in self.root.iterdir() if p.is_dir() and not p.is_symlink())


@functools.cache
def detect_layout(root: Path = CGROUP_ROOT) -> CgroupLayout:
    """This host's layout (cached: detection runs `stat -f`, and the mode cannot change)."""
    return CgroupLayout(mode=cgroup_mode(root), root=root)


@dataclass(frozen=True)
class CgroupStats:
    memory_usage: int  # bytes, without the inactive page cache
    memory_limit: int  # bytes; the host's memory when unlimited
    cpu_usage_ns: int  # CPU time used since the cgroup was created
    pids: int
    pids_limit: int  # 0 = unlimited
    read_at: int  # time.monotonic_ns() of the read


class CgroupLimits(TypedDict):
    """Limits as written, None where unlimited (or the controller is absent)."""

    memory: int | None  # bytes
    cpu_quota: int | None  # microseconds per period
    cpu_period: int | None  # microseconds
    pids: int | None


def _relative(cgroups_path: str) -> PurePosixPath:
    """`/pyswarm/<id>` relative to a hierarchy root; refuses the root itself and `..`."""
    rel = PurePosixPath(cgroups_path.lstrip("/"))
    if not rel.parts or any(part in (".", "..") for part in rel.parts):
        raise ValueError(f"not a cgroup below the root: {cgroups_path!r}")
    return rel


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None


def _read_int(path: Path) -> int:
    text = _read(path)
    return int(text) if text else 0


def _limit(text: str | None) -> int | None:
    """A limit file's value; None for "max", v1's sentinel, -1 (quota) or no file."""
    if text is None or text == "max":
        return None
    value = int(text)
    return None if value < 0 or value >= V1_UNLIMITED else value


def _keyed(path: Path, key: str) -> int:
    """One value of a flat keyed file (memory.stat, cpu.stat); 0 when absent."""
    for line in (_read(path) or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0


def host_memory(meminfo: Path = PROC_MEMINFO) -> int:
    """Total memory of the host in bytes (MemTotal), what docker shows when unlimited."""
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no MemTotal in {meminfo}")


def _require(layout: CgroupLayout, cgroups_path: str) -> None:
    memory = layout.controller_dir("memory", cgroups_path)
    if not memory.is_dir():
        raise FileNotFoundError(errno.ENOENT, "no such cgroup", str(memory))


def _memory_usage(layout: CgroupLayout, cgroups_path: str) -> int:
    d = layout.controller_dir("memory", cgroups_path)
    if layout.unified:
        usage, inactive = (
            _read_int(d / "memory.current"),
            _keyed(d / "memory.stat", "inactive_file"),
        )
    else:
        usage = _read_int(d / "memory.usage_in_bytes")
        inactive = _keyed(d / "memory.stat", "total_inactive_file")
    return usage - inactive if inactive < usage else usage


def _memory_limit(layout: CgroupLayout, cgroups_path: str) -> int | None:
    d = layout.controller_dir("memory", cgroups_path)
    return _limit(_read(d / ("memory.max" if layout.unified else "memory.limit_in_bytes")))


def _cpu_usage_ns(layout: CgroupLayout, cgroups_path: str) -> int:
    if layout.unified:
        return _keyed(layout.controller_dir("cpu", cgroups_path) / "cpu.stat", "usage_usec") * 1000
    return _read_int(layout.controller_dir("cpuacct", cgroups_path) / "cpuacct.usage")


def _cpu_limit(layout: CgroupLayout, cgroups_path: str) -> tuple[int | None, int | None]:
    """(quota, period) in microseconds."""
    d = layout.controller_dir("cpu", cgroups_path)
    if layout.unified:
        text = _read(d / "cpu.max")
        if text is None:
            return None, None
        quota, _, period = text.partition(" ")
        return _limit(quota), int(period) if period else None
    period_text = _read(d / "cpu.cfs_period_us")
    return _limit(_read(d / "cpu.cfs_quota_us")), int(period_text) if period_text else None


def _pids(layout: CgroupLayout, cgroups_path: str) -> tuple[int, int | None]:
    d = layout.controller_dir("pids", cgroups_path)
    return _read_int(d / "pids.current"), _limit(_read(d / "pids.max"))


def read_stats(
    cgroups_path: str,
    *,
    layout: CgroupLayout | None = None,
    clock: Callable[[], int] = time.monotonic_ns,
) -> CgroupStats:
    """Current usage of the cgroup at `cgroups_path` (e.g. `/pyswarm/<id>`)."""
    layout = layout or detect_layout()
    _require(layout, cgroups_path)
    read_at = clock()
    limit = _memory_limit(layout, cgroups_path)
    pids, pids_limit = _pids(layout, cgroups_path)
    return CgroupStats(
        memory_usage=_memory_usage(layout, cgroups_path),
        memory_limit=limit if limit is not None else host_memory(layout.meminfo),
        cpu_usage_ns=_cpu_usage_ns(layout, cgroups_path),
        pids=pids,
        pids_limit=pids_limit or 0,
        read_at=read_at,
    )


def cpu_percent(prev: CgroupStats, cur: CgroupStats, online_cpus: int) -> float:
    """CPU use between two reads, in percent of one CPU (at most `online_cpus` * 100)."""
    wall = cur.read_at - prev.read_at
    used = cur.cpu_usage_ns - prev.cpu_usage_ns
    if wall <= 0 or used <= 0:
        return 0.0
    return min(used / wall * 100.0, online_cpus * 100.0)


def limits(cgroups_path: str, *, layout: CgroupLayout | None = None) -> CgroupLimits:
    """The limits written for the cgroup, to check that a container's are enforced."""
    layout = layout or detect_layout()
    _require(layout, cgroups_path)
    quota, period = _cpu_limit(layout, cgroups_path)
    return CgroupLimits(
        memory=_memory_limit(layout, cgroups_path),
        cpu_quota=quota,
        cpu_period=period,
        pids=_pids(layout, cgroups_path)[1],
    )


def _rmdir(path: Path) -> None:
    os.rmdir(path)


def _leaf_first(top: Path) -> list[Path]:
    """`top` and the cgroups below it, children before their parents."""
    return [Path(dirpath) for dirpath, _, _ in os.walk(top, topdown=False)]


def _rmdir_retrying(
    path: Path, *, deadline: float, clock: Callable[[], float], sleep: Callable[[float], None]
) -> None:
    delay = 0.005
    while True:
        try:
            _rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or clock() >= deadline:
                raise
        sleep(delay)
        delay = min(delay * 2, 0.1)


def remove_cgroup(
    cgroups_path: str,
    *,
    layout: CgroupLayout | None = None,
    timeout: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Remove the cgroup (and any below it) from every hierarchy where it exists.

    A cgroup still holding processes stays busy (EBUSY) until they are gone; this
    retries until `timeout`, then raises the OSError. A missing cgroup is not an error.
    """
    layout = layout or detect_layout()
    rel = _relative(cgroups_path)
    deadline = clock() + timeout
    for hierarchy in layout.hierarchies():
        top = hierarchy / rel
        if top.is_dir():
            for path in _leaf_first(top):
                _rmdir_retrying(path, deadline=deadline, clock=clock, sleep=sleep)


def leftover_cgroups(prefix: str = "/pyswarm", *, layout: CgroupLayout | None = None) -> list[str]:
    """Cgroup paths directly below `prefix` that exist in any hierarchy, sorted."""
    layout = layout or detect_layout()
    rel = _relative(prefix)
    found = {
        f"/{rel}/{child.name}"
        for hierarchy in layout.hierarchies()
        if (hierarchy / rel).is_dir()
        for child in (hierarchy / rel).iterdir()
        if child.is_dir()
    }
    return sorted(found)


def remove_parent_if_empty(prefix: str, *, layout: CgroupLayout | None = None) -> None:
    """rmdir `prefix` in every hierarchy where it has no child cgroup left (the daemon's
    parent cgroup, at shutdown); one with children, or processes, stays."""
    layout = layout or detect_layout()
    rel = _relative(prefix)
    for hierarchy in layout.hierarchies():
        path = hierarchy / rel
        if path.is_dir() and not any(child.is_dir() for child in path.iterdir()):
            with contextlib.suppress(OSError):
                path.rmdir()

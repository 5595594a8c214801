"""`down`: tear a lab down, the other half of :mod:`deploy.lab` (which re-exports it).

Order in `down`, per host and in parallel across hosts: remove its containers through
its daemon (containers outlive their daemon by design, so stopping it is not enough; a
daemon that died with containers left is started again to remove them), then stop it
(SIGTERM, SIGKILL after a deadline); then the container namespaces a killed daemon
left, the host and switch namespaces, the empty cgroup parents, the mounts under the
data roots, and last the data roots and the state, so a `down` that fails can be rerun.

Invariants: `down` is idempotent and needs nothing but the lab's name. It works from
state.json when there is one, else from what it finds (:func:`_recover`), so it cleans
a half-made lab, and a lab after a reboot wiped /run. A step that fails does not stop
the others: every failure is collected and reported in one LabError, and the data root
and state are removed only when nothing failed. The plan, the paths and the daemon
helpers it shares with `up` (spawn, probe, liveness) live in :mod:`deploy.lab`.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import os
import re
import shutil
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from deploy.lab import (
    DATA_ROOT,
    NETNS_DIR,
    RUN_ROOT,
    START_TIMEOUT,
    STOP_TIMEOUT,
    Host,
    Lab,
    LabError,
    _alive,
    _answers,
    _children,
    _namespaces_of,
    _plan_host,
    _running_daemon,
    _spawn,
    check_name,
    load,
    run_cli,
    wait_for,
)

_HOST = re.compile(r"[mw]\d+")
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
MNT_DETACH = 2


def down(name: str) -> None:
    """Remove everything the lab `name` made; idempotent, and works from a half-made
    lab. Raises LabError naming what could not be removed (then the state stays, and
    `down` can be rerun)."""
    check_name(name)
    try:
        hosts = load(name).hosts
    except LabError:
        hosts = _recover(name).hosts
    from overlay import netns  # see deploy.lab._make_network

    problems: list[str] = []
    with ThreadPoolExecutor(max_workers=max(len(hosts), 1)) as pool:
        for stopped in pool.map(_stop_host, hosts):
            problems += stopped
    for ns in _container_namespaces(hosts) + _namespaces_of(name):
        problems += _attempt(f"namespace {ns}", partial(netns.remove_netns, ns))
    for host in hosts:
        problems += _remove_cgroups(host.cgroup_parent)
    problems += _unmount_under(DATA_ROOT / name)
    if problems:
        raise LabError(f"lab {name}: could not remove {', '.join(problems)}")
    shutil.rmtree(DATA_ROOT / name, ignore_errors=True)
    shutil.rmtree(RUN_ROOT / name, ignore_errors=True)
    for parent in (DATA_ROOT, RUN_ROOT):  # only if no other lab is there
        with contextlib.suppress(OSError):
            parent.rmdir()


def _attempt(what: str, action: Callable[[], object]) -> list[str]:
    try:
        action()
    except Exception as exc:
        return [f"{what} ({exc})"]
    return []


def _stop_host(host: Host) -> list[str]:
    """Remove the host's containers through its daemon, then stop the daemon.

    Containers outlive their daemon by design: if it is gone (killed, or `up` failed)
    while its data root still holds containers, it is started again first, so that it
    adopts and removes them."""
    pid = _running_daemon(host)
    if pid is None and _has_containers(host) and os.path.exists(host.netns_path):
        with contextlib.suppress(LabError):
            _spawn(host)
            pid = host.pid
            wait_for(lambda: _answers(host), timeout=START_TIMEOUT, what="the daemon")
    if pid is None:
        return []
    with contextlib.suppress(LabError):
        ids = run_cli(host, "ps", "-a", "-q", "--no-trunc").split()
        if ids:
            run_cli(host, "rm", "-f", "-v", *ids)
    return _attempt(f"the daemon of {host.name} (pid {pid})", partial(_terminate, pid))


def _has_containers(host: Host) -> bool:
    try:
        return any(Path(host.data_root, "containers").iterdir())
    except OSError:
        return False


def _terminate(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    try:
        wait_for(lambda: not _alive(pid), timeout=STOP_TIMEOUT, what=f"pid {pid} to exit")
    except LabError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not _alive(pid), timeout=STOP_TIMEOUT, what=f"pid {pid} to die")
    proc = _children.pop(pid, None)
    if proc is not None:
        proc.wait()


def _recover(name: str) -> Lab:
    """The plan of a lab whose state is gone (/run is wiped at boot, /var/lib is not) or
    was never written, from the namespaces and data roots that are there."""
    lab = Lab(name=name, switch=f"pyswarm-lab-{name}-sw", heartbeat="1s")
    found = {ns.rpartition("-")[2] for ns in _namespaces_of(name)}
    with contextlib.suppress(OSError):
        found |= {p.name for p in lab.data_dir.iterdir()}
    lab.hosts = [_plan_host(lab, h) for h in sorted(found) if _HOST.fullmatch(h)]
    return lab


def _container_namespaces(hosts: list[Host]) -> list[str]:
    """Container namespaces of a daemon that was killed before removing them: the
    daemon names them `pyswarm-<tag>-...`, tag from its data root (cli/daemon.py)."""
    tags = [
        hashlib.sha256(str(Path(h.data_root).resolve()).encode()).hexdigest()[:6] for h in hosts
    ]
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(ns for ns in names for tag in tags if ns.startswith(f"pyswarm-{tag}-"))


def _mounts() -> Iterator[tuple[str, str]]:
    """(mount point, fs type) of each mount, from /proc/self/mountinfo."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, tail = line.partition(" - ")
        point = fields.split()[4]
        yield _unescape(point), tail.split()[0]


def _unescape(path: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), path)


def _remove_cgroups(parent: str) -> list[str]:
    """rmdir the parent cgroup in every mounted hierarchy; one that still has a child
    or a process is reported, not forced."""
    problems = []
    for point, fstype in _mounts():
        if fstype not in ("cgroup", "cgroup2"):
            continue
        path = Path(point) / parent.lstrip("/")
        if path.is_dir():
            problems += _attempt(f"cgroup {path}", path.rmdir)
    return problems


def _unmount_under(root: Path) -> list[str]:
    """Unmount everything at or under `root`, deepest first (lazily if busy)."""
    prefix = str(root) + "/"
    points = sorted(
        {p for p, _ in _mounts() if p == str(root) or p.startswith(prefix)},
        key=lambda p: p.count("/"),
        reverse=True,
    )
    for point in points:
        if _libc.umount2(point.encode(), 0) != 0:
            _libc.umount2(point.encode(), MNT_DETACH)
    left = [p for p, _ in _mounts() if p == str(root) or p.startswith(prefix)]
    return [f"mount {p}" for p in left]

"""Cgroup files read back: stats and limits on fake v1/v2 trees, removal, leftovers."""

from __future__ import annotations

import errno
import os
import secrets
import subprocess
from pathlib import Path

import pytest

from agent.containers import cgroups
from agent.containers.cgroups import (
    CgroupLayout,
    CgroupStats,
    cpu_percent,
    leftover_cgroups,
    limits,
    read_stats,
    remove_cgroup,
)
from agent.hostprep import CgroupMode, cgroup_mode

HOST_MEMORY = 8 * 1024**3
CID = "/pyswarm/c1"


def files(base: Path, **contents: str) -> None:
    base.mkdir(parents=True, exist_ok=True)
    for name, text in contents.items():
        (base / name.replace("_", ".", 1)).write_text(text + "\n")


@pytest.fixture
def meminfo(tmp_path: Path) -> Path:
    path = tmp_path / "meminfo"
    path.write_text(f"MemTotal:        {HOST_MEMORY // 1024} kB\nMemFree:  1 kB\n")
    return path


@pytest.fixture
def v1(tmp_path: Path, meminfo: Path) -> CgroupLayout:
    root = tmp_path / "cg"
    files(
        root / "memory/pyswarm/c1",
        memory_usage_in_bytes="10000",
        memory_limit_in_bytes=str(64 * 1024**2),
        memory_stat="cache 5000\ninactive_file 1\ntotal_inactive_file 3000\n",
    )
    files(root / "cpuacct/pyswarm/c1", cpuacct_usage="123456789")
    files(root / "cpu/pyswarm/c1", cpu_cfs_quota_us="50000", cpu_cfs_period_us="100000")
    files(root / "pids/pyswarm/c1", pids_current="3", pids_max="max")
    return CgroupLayout(mode=CgroupMode.HYBRID, root=root, meminfo=meminfo)


@pytest.fixture
def v2(tmp_path: Path, meminfo: Path) -> CgroupLayout:
    root = tmp_path / "cg2"
    files(
        root / "pyswarm/c1",
        memory_current="20000",
        memory_max="max",
        memory_stat="anon 100\ninactive_file 4000\n",
        cpu_stat="usage_usec 2500\nuser_usec 2000\nsystem_usec 500",
        cpu_max="max 100000",
        pids_current="2",
        pids_max="50",
    )
    return CgroupLayout(mode=CgroupMode.V2, root=root, meminfo=meminfo)


def stats(cpu_ns: int, at_ns: int) -> CgroupStats:
    return CgroupStats(0, 0, cpu_ns, 0, 0, at_ns)


# ---- stats and limits ---------------------------------------------------------------


@pytest.mark.unit
def test_v1_stats(v1: CgroupLayout) -> None:
    assert read_stats(CID, layout=v1, clock=lambda: 42) == CgroupStats(
        memory_usage=7000,  # usage minus total_inactive_file, as docker
        memory_limit=64 * 1024**2,
        cpu_usage_ns=123456789,
        pids=3,
        pids_limit=0,
        read_at=42,
    )


@pytest.mark.unit
def test_v1_unlimited_memory_is_the_host_memory(v1: CgroupLayout) -> None:
    files(v1.root / "memory/pyswarm/c1", memory_limit_in_bytes="9223372036854771712")
    assert read_stats(CID, layout=v1).memory_limit == HOST_MEMORY
    assert limits(CID, layout=v1)["memory"] is None


@pytest.mark.unit
def test_v1_limits(v1: CgroupLayout) -> None:
    assert limits(CID, layout=v1) == {
        "memory": 64 * 1024**2,
        "cpu_quota": 50000,
        "cpu_period": 100000,
        "pids": None,
    }
    files(v1.root / "cpu/pyswarm/c1", cpu_cfs_quota_us="-1")
    files(v1.root / "pids/pyswarm/c1", pids_max="100")
    assert limits(CID, layout=v1)["cpu_quota"] is None
    assert limits(CID, layout=v1)["pids"] == 100


@pytest.mark.unit
def test_v2_stats(v2: CgroupLayout) -> None:
    assert read_stats(CID, layout=v2, clock=lambda: 7) == CgroupStats(
        memory_usage=16000,  # memory.current minus inactive_file
        memory_limit=HOST_MEMORY,
        cpu_usage_ns=2_500_000,
        pids=2,
        pids_limit=50,
        read_at=7,
    )


@pytest.mark.unit
def test_v2_limits(v2: CgroupLayout) -> None:
    assert limits(CID, layout=v2) == {
        "memory": None,
        "cpu_quota": None,
        "cpu_period": 100000,
        "pids": 50,
    }
    files(v2.root / "pyswarm/c1", memory_max="67108864", cpu_max="150000 100000")
    got = limits(CID, layout=v2)
    assert (got["memory"], got["cpu_quota"]) == (67108864, 150000)


@pytest.mark.unit
def test_inactive_cache_larger_than_usage_is_ignored(v2: CgroupLayout) -> None:
    files(v2.root / "pyswarm/c1", memory_current="100", memory_stat="inactive_file 4000")
    assert read_stats(CID, layout=v2).memory_usage == 100


@pytest.mark.unit
def test_missing_controllers_read_as_zero_and_unlimited(v1: CgroupLayout) -> None:
    for controller in ("cpu", "cpuacct", "pids"):
        for f in (v1.root / controller / "pyswarm/c1").iterdir():
            f.unlink()
    got = read_stats(CID, layout=v1)
    assert (got.cpu_usage_ns, got.pids, got.pids_limit) == (0, 0, 0)
    assert limits(CID, layout=v1) == {
        "memory": 64 * 1024**2,
        "cpu_quota": None,
        "cpu_period": None,
        "pids": None,
    }


@pytest.mark.unit
@pytest.mark.parametrize("mode", [CgroupMode.V1, CgroupMode.V2])
def test_missing_cgroup_raises(tmp_path: Path, mode: CgroupMode) -> None:
    layout = CgroupLayout(mode=mode, root=tmp_path)
    with pytest.raises(FileNotFoundError):
        read_stats("/pyswarm/nope", layout=layout)
    with pytest.raises(FileNotFoundError):
        limits("/pyswarm/nope", layout=layout)


@pytest.mark.unit
@pytest.mark.parametrize("path", ["/", "", "/pyswarm/../etc", "/.."])
def test_paths_outside_a_cgroup_are_refused(v1: CgroupLayout, path: str) -> None:
    with pytest.raises(ValueError, match="not a cgroup below the root"):
        remove_cgroup(path, layout=v1)


@pytest.mark.unit
def test_cpu_percent() -> None:
    second = 1_000_000_000
    assert cpu_percent(stats(0, 0), stats(second // 2, second), 4) == 50.0
    assert cpu_percent(stats(0, 0), stats(3 * second, second), 4) == 300.0
    assert cpu_percent(stats(0, 0), stats(9 * second, second), 4) == 400.0  # capped
    assert cpu_percent(stats(5, 10), stats(9, 10), 4) == 0.0  # no time passed
    assert cpu_percent(stats(9, 0), stats(5, 10), 4) == 0.0  # counter went back


@pytest.mark.unit
def test_host_memory(meminfo: Path) -> None:
    assert cgroups.host_memory(meminfo) == HOST_MEMORY


@pytest.mark.unit
def test_detect_layout_uses_host_preparation() -> None:
    assert cgroups.detect_layout().mode is cgroup_mode()


# ---- removal and leftovers ----------------------------------------------------------


def empty_tree(root: Path, *paths: str) -> CgroupLayout:
    for p in paths:
        (root / p).mkdir(parents=True)
    return CgroupLayout(mode=CgroupMode.V1, root=root)


@pytest.mark.unit
def test_remove_cgroup_from_every_hierarchy_children_first(tmp_path: Path) -> None:
    layout = empty_tree(
        tmp_path,
        "memory/pyswarm/c1/sub/leaf",
        "pids/pyswarm/c1",
        "pids/pyswarm/c2",
        "cpu,cpuacct/pyswarm/c1",
        "unified",
    )
    (tmp_path / "cpu").symlink_to("cpu,cpuacct")
    assert leftover_cgroups(layout=layout) == ["/pyswarm/c1", "/pyswarm/c2"]
    remove_cgroup("/pyswarm/c1", layout=layout)
    assert leftover_cgroups(layout=layout) == ["/pyswarm/c2"]
    assert sorted(p.name for p in layout.hierarchies()) == [
        "cpu,cpuacct",
        "memory",
        "pids",
        "unified",
    ]
    assert (tmp_path / "memory/pyswarm").is_dir()  # the shared parent stays
    remove_cgroup("/pyswarm/c1", layout=layout)  # already gone: fine


@pytest.mark.unit
def test_leftovers_of_an_absent_prefix(tmp_path: Path) -> None:
    assert leftover_cgroups(layout=empty_tree(tmp_path, "memory")) == []


@pytest.mark.unit
def test_remove_cgroup_on_v2(tmp_path: Path) -> None:
    (tmp_path / "pyswarm/c1").mkdir(parents=True)
    layout = CgroupLayout(mode=CgroupMode.V2, root=tmp_path)
    remove_cgroup("/pyswarm/c1", layout=layout)
    assert leftover_cgroups(layout=layout) == []


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def busy_for(monkeypatch: pytest.MonkeyPatch, attempts: int, err: int = errno.EBUSY) -> list[Path]:
    calls: list[Path] = []

    def rmdir(path: Path) -> None:
        calls.append(path)
        if len(calls) <= attempts:
            raise OSError(err, os.strerror(err), str(path))
        os.rmdir(path)

    monkeypatch.setattr(cgroups, "_rmdir", rmdir)
    return calls


@pytest.mark.unit
def test_remove_cgroup_retries_while_busy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = empty_tree(tmp_path, "pids/pyswarm/c1")
    calls = busy_for(monkeypatch, 3)
    fake = FakeTime()
    remove_cgroup("/pyswarm/c1", layout=layout, clock=fake.clock, sleep=fake.sleep)
    assert len(calls) == 4 and not (tmp_path / "pids/pyswarm/c1").exists()
    assert 0 < fake.now < 0.1


@pytest.mark.unit
def test_remove_cgroup_gives_up_at_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = empty_tree(tmp_path, "pids/pyswarm/c1")
    busy_for(monkeypatch, 10**6)
    fake = FakeTime()
    with pytest.raises(OSError) as exc_info:
        remove_cgroup("/pyswarm/c1", layout=layout, timeout=2.0, clock=fake.clock, sleep=fake.sleep)
    assert exc_info.value.errno == errno.EBUSY
    assert 2.0 <= fake.now < 2.2


@pytest.mark.unit
def test_remove_cgroup_does_not_retry_other_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = empty_tree(tmp_path, "pids/pyswarm/c1")
    calls = busy_for(monkeypatch, 1, errno.EPERM)
    with pytest.raises(PermissionError):
        remove_cgroup("/pyswarm/c1", layout=layout, sleep=lambda s: pytest.fail("retried"))
    assert len(calls) == 1


# ---- the real thing -----------------------------------------------------------------


def _enable_v2_controllers(parent: Path) -> None:
    wanted = {"memory", "pids"} & set(
        (parent.parent / "cgroup.subtree_control").read_text().split()
    )
    if wanted != {"memory", "pids"}:
        pytest.skip("cgroup v2 root does not delegate memory and pids")
    (parent / "cgroup.subtree_control").write_text("+memory +pids")


@pytest.mark.integration
def test_real_cgroup_limits_stats_and_removal() -> None:
    if os.geteuid() != 0:
        pytest.skip("creating cgroups needs root")
    layout = cgroups.detect_layout()
    parent = f"/pyswarm-test-{secrets.token_hex(4)}"
    child = f"{parent}/c1"
    memory = layout.controller_dir("memory", child)
    pids = layout.controller_dir("pids", child)
    sleeper: subprocess.Popen[bytes] | None = None
    try:
        if layout.unified:
            memory.parent.mkdir()
            _enable_v2_controllers(memory.parent)
        memory.mkdir(parents=True)
        pids.mkdir(parents=True, exist_ok=True)
        limit_file = "memory.max" if layout.unified else "memory.limit_in_bytes"
        (memory / limit_file).write_text(str(64 * 1024**2))
        (pids / "pids.max").write_text("50")

        assert leftover_cgroups(parent) == [child]
        got = limits(child)
        assert (got["memory"], got["pids"]) == (64 * 1024**2, 50)
        before = read_stats(child)
        assert (before.memory_limit, before.pids_limit, before.pids) == (64 * 1024**2, 50, 0)

        if not layout.unified:  # a process of ours in the pids hierarchy only
            sleeper = subprocess.Popen(["sleep", "30"])
            (pids / "cgroup.procs").write_text(str(sleeper.pid))
            assert read_stats(child).pids == 1
            with pytest.raises(OSError) as busy:
                remove_cgroup(parent, timeout=0.05)
            assert busy.value.errno == errno.EBUSY
            sleeper.kill()
            sleeper.wait()
    finally:
        if sleeper is not None and sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
        remove_cgroup(parent)
    assert leftover_cgroups(parent) == []
    assert not any((h / parent.lstrip("/")).exists() for h in layout.hierarchies())

"""Engine benchmarks (`make bench`): figures with ratios to baselines from the same run.

- `pyswarm run --rm busybox true`, the whole client process, vs raw `crun run` of
  an equivalent busybox bundle (target ≤ 150 ms median; docker measured 315 ms);
- daemon-side create → start → exit (gRPC, no client start-up) vs raw crun
  (target ≤ 2× crun);
- daemon RSS idle and with 100 running containers (target ≤ 100 MB + 2 MB each),
  and conmon's RSS per container.
Medians of N ≥ 20 runs. Printed, not asserted: speed is measured here, not tested.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench
RUNS = 21


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def _timed(fn, runs: int = RUNS) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _children_rss_kb(pid: int) -> int:
    """RSS of the daemon: nsenter execs it, so the Popen pid is the daemon itself."""
    return _rss_kb(pid)


@pytest.fixture
def crun_bundle(tmp_path, busybox_tar):
    bundle = tmp_path / "bundle"
    rootfs = bundle / "rootfs"
    rootfs.mkdir(parents=True)
    with tarfile.open(busybox_tar) as tar:
        tar.extractall(rootfs, filter="tar")
    subprocess.run(["crun", "spec"], cwd=bundle, check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["true"]
    spec["linux"]["cgroupsPath"] = "/pyswarm-bench/baseline"
    (bundle / "config.json").write_text(json.dumps(spec))
    yield bundle
    for h in Path("/sys/fs/cgroup").iterdir():
        for d in (h / "pyswarm-bench" / "baseline", h / "pyswarm-bench"):
            if d.is_dir():
                d.rmdir()


def _crun_run(bundle: Path, root: Path) -> None:
    subprocess.run(
        ["crun", "--root", str(root), "run", "--bundle", str(bundle), "bench"],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def test_run_latency(daemon, busybox, crun_bundle, tmp_path, capsys):
    crun_root = tmp_path / "crun-state"
    crun = _timed(lambda: _crun_run(crun_bundle, crun_root))
    whole = _timed(lambda: daemon.cli("run", "--rm", busybox, "true", check=True))
    whole_none = _timed(
        lambda: daemon.cli("run", "--rm", "--network", "none", busybox, "true", check=True)
    )

    import grpc

    from api import engine_pb2, engine_pb2_grpc

    channel = grpc.insecure_channel(daemon.host)
    stub = engine_pb2_grpc.EngineStub(channel)

    created: list[str] = []

    def api_run(network: str) -> None:
        """create -> start -> exit seen by a waiting client; removal is not timed
        (the baseline's `crun run` deletes its container after the exit, too, but
        that is cheap for crun and the daemon's --rm path is timed above)."""
        config = engine_pb2.ContainerConfig(image=busybox, cmd=["true"], network=network)
        cid = stub.ContainerCreate(engine_pb2.ContainerCreateRequest(config=config)).id
        stub.ContainerStart(engine_pb2.ContainerRef(id=cid))
        stub.ContainerWait(engine_pb2.ContainerRef(id=cid))
        created.append(cid)

    def cleanup() -> None:
        for cid in created:
            stub.ContainerRemove(engine_pb2.ContainerRemoveRequest(id=cid, force=True))
        created.clear()

    daemon_side = _timed(lambda: api_run("none"))
    cleanup()
    daemon_bridge = _timed(lambda: api_run("bridge"))
    cleanup()
    channel.close()
    base = _median_ms(crun)
    rows = [
        ("crun run (baseline)", crun),
        ("daemon-side create->start->exit, --network none", daemon_side),
        ("daemon-side create->start->exit, bridge", daemon_bridge),
        ("pyswarm run --rm busybox true (whole process)", whole),
        ("pyswarm run --rm --network none busybox true", whole_none),
    ]
    with capsys.disabled():
        print(f"\n{'benchmark':52} {'median':>10} {'p90':>10} {'vs crun':>8}")
        for name, samples in rows:
            med = _median_ms(samples)
            p90 = sorted(samples)[int(len(samples) * 0.9)] * 1000
            print(f"{name:52} {med:8.1f}ms {p90:8.1f}ms {med / base:7.2f}x")


def test_daemon_memory(daemon, busybox, capsys):
    assert daemon.proc is not None
    idle = _children_rss_kb(daemon.proc.pid)
    count = 100
    for i in range(count):
        daemon.cli(
            "run", "-d", "--network", "none", "--name", f"m{i}", busybox, "sleep", "600", check=True
        )
    loaded = _children_rss_kb(daemon.proc.pid)
    ids = daemon.cli("ps", "-q", "--no-trunc", check=True).stdout.split()
    conmons = []
    for cid in ids[:10]:
        pid = int((daemon.data_root / "containers" / cid / "conmon.pid").read_text())
        conmons.append(_rss_kb(pid))
    with capsys.disabled():
        print(f"\ndaemon RSS idle:                     {idle / 1024:7.1f} MB (target <= 100 MB)")
        print(
            f"daemon RSS with {count} containers:      {loaded / 1024:7.1f} MB "
            f"(+{(loaded - idle) / 1024 / count:.2f} MB per container; target <= 2 MB)"
        )
        print(f"conmon RSS per container (median):   {statistics.median(conmons) / 1024:7.2f} MB")
    assert len(ids) == count
    shutil.rmtree(daemon.data_root / "tmp", ignore_errors=True)

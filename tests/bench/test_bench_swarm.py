"""Swarm control-plane benchmarks (`make bench`), on one lab: 3 managers + 16 workers.

- control writes/s (UpdateNode label changes) with 1, 4, 16, 32 and 64 concurrent
  clients, to the leader and to a follower (which forwards to the leader), through the
  daemon's unix socket and through mTLS to the cluster port (m1's own certificates); and
  p50/p99 latency paced at 500 writes/s in total by 16 clients (each ~31/s), with the
  rate achieved. Writes to one node are serial (each carries the version the last one
  returned), so the writes in flight are bounded by the nodes written: the 16 workers'
  node objects are the ones written, client i writes worker i (mod 16). Up to c=16 each
  client has its own node, so no conflicts by construction (counted anyway); at 32 and
  64, 2 and 4 clients share each node and the conflicts are reported separately.
  Baseline: bare Raft proposals/s, 3 in-process RaftNodes on 127.0.0.1, trivial state
  machine, same concurrency, same run.
  Targets (issue): >= 5,000 writes/s with concurrent clients; p99 < 50 ms at 500/s.
  PYSWARM_BENCH_PYSPY=DIR: after the figures, one more paced run to the leader's socket
  under `py-spy record` of the leader daemon, its raw stacks written to DIR (not counted).
- leader failover over 10 SIGKILLs: kill to the first acknowledged write from another
  manager; target p99 <= 2 s. Docker Swarm's 10-20 s is quoted, not measured here.
Printed, not asserted (except that the cluster comes back whole after each kill).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from deploy import lab as lablib

pytestmark = pytest.mark.bench

SECONDS = 5.0
WORKERS = 16  # the written node objects; up ~32 s, down ~30 s on a 2-core machine
CONCURRENCY = (1, 4, 16, 32, 64)  # <= WORKERS: one client per node, no conflicts
PACED_RATE = 500.0
PACED_CLIENTS = 16  # each paced at PACED_RATE / PACED_CLIENTS, on its own node
KILLS = 10
CLIENT = Path(__file__).with_name("swarm_client.py")
PYTHON = str(Path(sys.executable))
PAYLOAD = b"x" * 256  # about a node-update batch


@pytest.fixture(scope="module")
def swarm_lab() -> Iterator[lablib.Lab]:
    name = "bsw" + secrets.token_hex(3)
    try:
        yield lablib.up(name, managers=3, workers=WORKERS, heartbeat="1s")
    finally:
        _down(name)


def _down(name: str) -> None:
    """`lab.down`; if this process's copy of deploy.lab fails (it may be edited while
    the bench runs), again in a fresh interpreter, so the lab is never left up."""
    try:
        lablib.down(name)
    except Exception as exc:
        code = "import sys; from deploy import lab; lab.down(sys.argv[1])"
        root = Path(__file__).resolve().parents[2]
        res = subprocess.run([PYTHON, "-c", code, name], cwd=root, timeout=300)
        if res.returncode != 0:
            raise
        print(f"\nlab {name}: down needed a fresh interpreter ({exc!r})")


def nodes(lab: lablib.Lab, via: lablib.Host) -> list[dict[str, Any]]:
    out = lablib.run_cli(via, "node", "ls", "--format", "json")
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def leader_of(lab: lablib.Lab, via: lablib.Host) -> lablib.Host:
    rows = nodes(lab, via)
    (row,) = [r for r in rows if r["ManagerStatus"] == "Leader"]
    return lab.host(row["Hostname"])


# -- baseline: bare Raft ------------------------------------------------------------


class Trivial:
    def apply(self, data: bytes) -> bytes:
        return b""

    def snapshot(self) -> bytes:
        return b""

    def restore(self, data: bytes) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raft_baseline() -> dict[int, tuple[float, float, float]]:
    """{concurrency: (proposals/s, p50 ms, p99 ms)} of 3 in-process RaftNodes."""
    from manager.raft import RaftNode

    addrs = [f"127.0.0.1:{_free_port()}" for _ in range(3)]
    out: dict[int, tuple[float, float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="pyswarm-bench-raft-") as tmp:
        rafts = [
            RaftNode(self_addr=a, peers=addrs, password="bench", data_dir=Path(tmp, str(i)),
                     machine=Trivial())
            for i, a in enumerate(addrs)
        ]  # fmt: skip
        for r in rafts:
            r.start()
        try:
            lablib.wait_for(
                lambda: next((r for r in rafts if r.status().is_leader), None),
                timeout=15,
                what="a raft leader",
            )
            leader = next(r for r in rafts if r.status().is_leader)
            for n in CONCURRENCY:
                out[n] = _propose_loop(leader, n)
        finally:
            for r in rafts:
                r.close()
    return out


def _propose_loop(leader, n: int) -> tuple[float, float, float]:
    deadline = time.monotonic() + SECONDS
    lat: list[list[float]] = [[] for _ in range(n)]

    def client(i: int) -> None:
        for _ in range(200_000):
            if time.monotonic() >= deadline:
                return
            t = time.perf_counter()
            leader.propose(PAYLOAD, timeout=5.0)
            lat[i].append(time.perf_counter() - t)

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(SECONDS + 30)
    elapsed = time.monotonic() - started
    flat = sorted(x for xs in lat for x in xs)
    return len(flat) / elapsed, _pct(flat, 0.5), _pct(flat, 0.99)


def _pct(sorted_s: list[float], p: float) -> float:
    return sorted_s[min(int(len(sorted_s) * p), len(sorted_s) - 1)] * 1000 if sorted_s else 0.0


# -- the lab clients ----------------------------------------------------------------


def run_client(where: lablib.Host, cfg: dict[str, Any]) -> dict[str, Any]:
    argv, env = lablib.command_for(where, [PYTHON, str(CLIENT), json.dumps(cfg)])
    res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=SECONDS + 90)
    if res.returncode != 0:
        raise AssertionError(f"client failed: {res.stderr.strip()[-2000:]}")
    report: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return report


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _with_cpu(leader: lablib.Host, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The client's report, plus the leader daemon's CPU use (% of one core) during it."""
    assert leader.pid is not None
    before, t = _cpu_seconds(leader.pid), time.monotonic()
    r = run()
    r["leader_cpu"] = 100 * (_cpu_seconds(leader.pid) - before) / (time.monotonic() - t)
    return r


def test_control_writes(swarm_lab: lablib.Lab, capsys: pytest.CaptureFixture[str]) -> None:
    lab = swarm_lab
    m1 = lab.host("m1")
    leader = leader_of(lab, m1)
    follower = next(h for h in lab.hosts if h.role == lablib.Role.MANAGER and h is not leader)
    workers = sorted((r for r in nodes(lab, m1) if not r["ManagerStatus"]), key=_host_order)
    ids = [r["ID"] for r in workers]
    assert len(ids) == WORKERS, [r["Hostname"] for r in workers]
    certs = str(Path(m1.data_root, "swarm", "certificates"))
    base = raft_baseline()

    targets = [
        (f"{leader.name} (leader) unix socket", leader, {"target": leader.host}),
        (f"{leader.name} (leader) mTLS :2377", m1,
         {"target": f"{leader.address}:{lablib.SWARM_PORT}", "certs": certs}),
        (f"{follower.name} (follower) unix socket", follower, {"target": follower.host}),
        (f"{follower.name} (follower) mTLS :2377", m1,
         {"target": f"{follower.address}:{lablib.SWARM_PORT}", "certs": certs}),
    ]  # fmt: skip
    paced = {"nodes": ids, "mode": "paced", "concurrency": PACED_CLIENTS, "rate": PACED_RATE,
             "seconds": SECONDS}  # fmt: skip
    rows: list[tuple[str, str, int | None, dict[str, Any]]] = []
    for label, where, target in targets:
        for n in CONCURRENCY:
            cfg = {**target, "nodes": ids, "mode": "closed", "concurrency": n, "seconds": SECONDS}
            r = _with_cpu(leader, partial(run_client, where, cfg))
            share = f" ({-(-n // len(ids))}/node)" if n > len(ids) else ""
            rows.append((label, f"c={n}{share}", n, r))
        r = _with_cpu(leader, partial(run_client, where, {**target, **paced}))
        rows.append((label, f"paced {PACED_RATE:g}/s", None, r))

    with capsys.disabled():
        print(f"\nbare Raft baseline (3 in-process RaftNodes, 127.0.0.1, {len(PAYLOAD)} B):")
        for c, (rate, p50, p99) in base.items():
            print(f"  c={c:<3} {rate:9.0f} proposals/s  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms")
        print(
            f"\ncontrol writes (UpdateNode labels on {len(ids)} worker nodes, {SECONDS:g} s "
            f"each; paced: {PACED_CLIENTS} clients, one node each, {PACED_RATE:g}/s in all, "
            "writes/s = achieved; target >= 5000/s, p99 < 50 ms at 500/s)"
        )
        hdr = f"{'target':34} {'load':16} {'writes/s':>9} {'vs raft':>8} {'p50 ms':>8} "
        print(hdr + f"{'p99 ms':>8} {'conflicts':>9} {'errors':>6} {'leader cpu':>10}")
        for label, load, conc, r in rows:
            ratio = f"{r['rate'] / base[conc][0]:7.2f}x" if conc else f"{'':8}"
            errors = sum(r["errors"].values())
            print(
                f"{label:34} {load:16} {r['rate']:9.0f} {ratio} {r['p50_ms'] or 0:8.1f} "
                f"{r['p99_ms'] or 0:8.1f} {r['conflicts']:9d} {errors:6d} "
                f"{r['leader_cpu']:9.0f}%"
            )
            if conc is None:
                print(
                    f"    paced: {r['ok']} of {r['planned']} writes acknowledged in "
                    f"{r['elapsed']:.2f} s, {r['missed']} never sent (too late), "
                    f"max {r['max_ms'] or 0:.1f} ms"
                )
            if r["errors"]:
                print(f"    errors: {r['errors']}")
    assert any(r["ok"] for *_, r in rows)
    if out := os.environ.get("PYSWARM_BENCH_PYSPY"):
        _profile(leader, Path(out), targets[0][2], paced)


def _host_order(row: dict[str, Any]) -> tuple[str, int]:
    name = row["Hostname"]
    return name[:1], int(name[1:]) if name[1:].isdigit() else 0


def _profile(leader: lablib.Host, out: Path, target: dict[str, Any], paced: dict[str, Any]) -> None:
    """One more paced run to the leader's socket, under `py-spy record` of its daemon."""
    assert leader.pid is not None
    out.mkdir(parents=True, exist_ok=True)
    spy = Path(PYTHON).with_name("py-spy")
    argv = [str(spy), "record", "--pid", str(leader.pid), "--format", "raw", "--nonblocking",
            "--rate", "200", "--duration", str(int(SECONDS) + 2),
            "--output", str(out / "leader.raw")]  # fmt: skip
    with open(out / "py-spy.log", "wb") as log:
        spy_proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            time.sleep(0.5)
            r = run_client(leader, {**target, **paced})
        finally:
            spy_proc.wait(timeout=SECONDS + 60)
    (out / "client.json").write_text(json.dumps(r, indent=2) + "\n")


# -- failover -----------------------------------------------------------------------


def _whole(lab: lablib.Lab, via: lablib.Host) -> bool:
    try:
        rows = nodes(lab, via)
    except lablib.LabError:
        return False
    managers = [r for r in rows if r["ManagerStatus"]]
    return (
        len(rows) == len(lab.hosts)
        and all(r["Status"] == "Ready" for r in rows)
        and sorted(r["ManagerStatus"] for r in managers) == ["Leader", "Reachable", "Reachable"]
    )


def _first_write(
    sock: str, node_id: str, *, start: threading.Event, limit: float
) -> dict[str, Any]:
    """After `start`: loop a label write through `sock` until one is acknowledged."""
    import grpc

    from api import swarm_pb2 as swarm
    from api import swarm_pb2_grpc as swarm_grpc

    with grpc.insecure_channel(f"unix://{sock}") as ch:
        stub = swarm_grpc.ControlStub(ch)
        stub.GetNode(swarm.NodeRef(node=node_id), timeout=5)  # connected before the kill
        start.wait(30)
        deadline = time.monotonic() + limit
        last, attempts = "", 0
        while time.monotonic() < deadline and attempts < 5000:
            attempts += 1
            try:
                node = stub.GetNode(swarm.NodeRef(node=node_id), timeout=1.0)
                req = swarm.UpdateNodeRequest(node_id=node_id, version=node.meta.version)
                req.spec.CopyFrom(node.spec)
                req.spec.labels["failover"] = str(attempts)
                stub.UpdateNode(req, timeout=1.0)
                return {"ok": True, "at": time.monotonic(), "attempts": attempts}
            except grpc.RpcError as exc:
                last = f"{exc.code().name}: {exc.details()}"
                time.sleep(0.01)
        return {"ok": False, "at": time.monotonic(), "attempts": attempts, "last": last}


def test_leader_failover(swarm_lab: lablib.Lab, capsys: pytest.CaptureFixture[str]) -> None:
    lab = swarm_lab
    managers = [h for h in lab.hosts if h.role == lablib.Role.MANAGER]
    ids = {r["Hostname"]: r["ID"] for r in nodes(lab, managers[0])}
    lablib.wait_for(lambda: _whole(lab, managers[0]), timeout=60, what="the swarm whole")
    samples: list[float] = []
    down_after: list[str] = []
    for k in range(KILLS):
        survivor = managers[(k + 1) % 3]
        leader = leader_of(lab, survivor)
        if survivor is leader:
            survivor = next(m for m in managers if m is not leader)
        go = threading.Event()
        result: dict[str, Any] = {}

        def probe(
            sock: str = survivor.sock,
            node_id: str = ids[survivor.name],
            go: threading.Event = go,
            result: dict[str, Any] = result,
        ) -> None:
            result.update(_first_write(sock, node_id, start=go, limit=30.0))

        prober = threading.Thread(target=probe)
        prober.start()
        time.sleep(0.3)  # the prober's channel is up
        killed_at = time.monotonic()
        lablib.kill(lab, leader.name, sig=signal.SIGKILL)  # returns once it is gone
        go.set()
        prober.join(60)
        assert result.get("ok"), f"kill {k + 1}: no write acknowledged: {result}"
        samples.append(result["at"] - killed_at)
        rows = nodes(lab, survivor)
        down_after += [f"kill {k + 1}: {r['Hostname']}" for r in rows if r["Status"] == "Down"]
        lablib.restart(lab, leader.name)
        lablib.wait_for(
            partial(_whole, lab, survivor),
            timeout=60,
            what="the swarm whole again",
            interval=0.2,
        )
    final = nodes(lab, managers[0])
    s = sorted(samples)
    with capsys.disabled():
        print(f"\nleader failover, {KILLS} SIGKILLs (kill -> first acknowledged write from "
              "another manager; target p99 <= 2 s)")  # fmt: skip
        print(
            f"  p50 {statistics.median(s):.2f} s  p99 {s[min(int(len(s) * 0.99), len(s) - 1)]:.2f}"
            f" s  max {s[-1]:.2f} s  min {s[0]:.2f} s"
        )
        print("  each: " + " ".join(f"{x:.2f}" for x in samples))
        print("  Docker Swarm defaults: 10-20 s (quoted from the issue/DESIGN, not measured)")
        print(f"  Down right after a failover (the killed host, before its restart): {down_after}")
        print(
            f"  after all kills: {[(r['Hostname'], r['Status'], r['ManagerStatus']) for r in final]}"
        )
    assert all(r["Status"] != "Down" for r in final)

"""Load client for test_bench_swarm.py, run inside a lab host's network namespace.

    python swarm_client.py '<json config>'   -> one JSON line on stdout

Config: target ("unix:///run/..sock" or "198.18.0.11:2377"), certs (dir with node.key,
node.crt, ca.crt, for a TCP target: mTLS as this manager), nodes (ids to update),
mode "closed" (concurrency clients, each issuing its next UpdateNode as soon as the
last replied, for `seconds`) or "paced" (concurrency clients, each open loop at
rate/concurrency writes/s for `seconds`; latency from the scheduled time, so queueing
counts). Client i writes node i modulo len(nodes): with no more clients than nodes each
client has its own node. Every loop is bounded in time and count.

Writes are label changes; each carries the version of the node last seen in a reply
(shared by the clients writing the same node). A stale one fails with "update out of
sequence": counted as a conflict, then the version is re-read (GetNode) unless a newer
reply already brought one. Closed-loop clients run as chained grpc futures (no thread
each); paced clients are a thread each, waiting on their own write's reply.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import grpc

from api import pki
from api import swarm_pb2 as swarm
from api import swarm_pb2_grpc as swarm_grpc

MAX_CALLS = 500_000  # per run, whatever the rate
RPC_TIMEOUT = 10.0
PACED_GRACE = 5.0  # s after the last due time: writes not yet sent are missed


def channel(cfg: dict[str, Any], i: int) -> grpc.Channel:
    opts = [("pyswarm.bench.channel", i)]  # distinct args: one connection per channel
    if cfg["target"].startswith("unix://"):
        return grpc.insecure_channel(cfg["target"], options=opts)
    d = Path(cfg["certs"])
    creds = pki.channel_credentials(
        (d / "ca.crt").read_bytes(),
        cert_pem=(d / "node.crt").read_bytes(),
        key_pem=(d / "node.key").read_bytes(),
    )
    return grpc.secure_channel(cfg["target"], creds, options=opts + pki.channel_options())


class Load:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        n = max(int(cfg.get("concurrency", 1)), 1)
        self.channels = [channel(cfg, i) for i in range(n)]
        self.stubs = [swarm_grpc.ControlStub(ch) for ch in self.channels]
        self.lock = threading.Lock()
        self.nodes: list[str] = cfg["nodes"]
        self.specs = {}
        self.versions = {}
        for node_id in self.nodes:
            node = self.stubs[0].GetNode(swarm.NodeRef(node=node_id), timeout=RPC_TIMEOUT)
            self.specs[node_id] = node.spec
            self.versions[node_id] = node.meta.version
        self.ok = 0
        self.conflicts = 0
        self.errors: dict[str, int] = {}
        self.rereads = 0
        self.latencies: list[float] = []
        self.calls = 0
        self.seq = 0
        self.done = threading.Event()
        self.planned = 0
        self.missed = 0

    def request(self, node_id: str) -> swarm.UpdateNodeRequest:
        with self.lock:
            self.seq += 1
            self.calls += 1
            spec = swarm.UpdateNodeRequest(node_id=node_id, version=self.versions[node_id])
        spec.spec.CopyFrom(self.specs[node_id])  # keep role and availability as they are
        spec.spec.labels["bench"] = str(self.seq)
        return spec

    def issue(self, stub: swarm_grpc.ControlStub, node_id: str, then) -> None:
        req = self.request(node_id)
        started = time.perf_counter()
        fut = stub.UpdateNode.future(req, timeout=RPC_TIMEOUT)
        fut.add_done_callback(
            partial(self.finish, stub=stub, node_id=node_id, req=req, started=started, then=then)
        )

    def finish(self, fut, *, stub, node_id, req, started, then) -> None:
        took = time.perf_counter() - started
        try:
            reply = fut.result()
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.FAILED_PRECONDITION or "out of sequence" in (
                exc.details() or ""
            ):
                with self.lock:
                    self.conflicts += 1
                    fresh = self.versions[node_id] != req.version
                if not fresh:
                    self.reread(stub, node_id, then)
                    return
            else:
                with self.lock:
                    key = f"{code.name}: {exc.details()}"[:120]
                    self.errors[key] = self.errors.get(key, 0) + 1
                time.sleep(0.01)
            then(None)
            return
        with self.lock:
            self.ok += 1
            self.latencies.append(took)
            self.versions[node_id] = max(self.versions[node_id], reply.meta.version)
        then(took)

    def reread(self, stub, node_id: str, then) -> None:
        def got(f) -> None:
            try:
                node = f.result()
            except grpc.RpcError:
                then(None)
                return
            with self.lock:
                self.rereads += 1
                self.versions[node_id] = max(self.versions[node_id], node.meta.version)
            then(None)

        stub.GetNode.future(swarm.NodeRef(node=node_id), timeout=RPC_TIMEOUT).add_done_callback(got)

    def closed(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        remaining = [len(self.stubs)]

        def client(i: int):
            stub, node_id = self.stubs[i], self.nodes[i % len(self.nodes)]

            def then(_took):
                if time.monotonic() < deadline and self.calls < MAX_CALLS:
                    self.issue(stub, node_id, then)
                    return
                with self.lock:
                    remaining[0] -= 1
                    if remaining[0] == 0:
                        self.done.set()

            return then

        started = time.monotonic()
        for i in range(len(self.stubs)):
            client(i)(None)
        self.done.wait(seconds + 2 * RPC_TIMEOUT)
        self.elapsed = time.monotonic() - started

    def paced(self, rate: float, seconds: float) -> None:
        """Open loop, `concurrency` clients, client i on node i (its own, so no
        conflicts by construction), each paced at rate/concurrency: its write k is due
        at begin + i/rate + k*concurrency/rate (the clients staggered evenly). A client
        sends each write when it is due, or as soon as its previous one replied if that
        is later; latency counts from when the write was due, so queueing counts. Writes
        still unsent PACED_GRACE s after the last one was due are counted as missed."""
        n = len(self.stubs)
        per_client = min(int(rate * seconds / n), MAX_CALLS // n)
        self.planned = per_client * n
        begin = time.perf_counter()
        hard_stop = begin + seconds + PACED_GRACE
        missed = [0] * n

        def client(i: int) -> None:
            stub, node_id = self.stubs[i], self.nodes[i % len(self.nodes)]
            for k in range(per_client):
                due = begin + (i + k * n) / rate
                now = time.perf_counter()
                if now >= hard_stop:
                    missed[i] = per_client - k
                    return
                if due > now:
                    time.sleep(due - now)
                req = self.request(node_id)
                replied = threading.Event()
                fut = stub.UpdateNode.future(req, timeout=RPC_TIMEOUT)
                fut.add_done_callback(
                    partial(self.finish, stub=stub, node_id=node_id, req=req, started=due,
                            then=lambda _t, ev=replied: ev.set())
                )  # fmt: skip
                if not replied.wait(2 * RPC_TIMEOUT):
                    missed[i] = per_client - k
                    return

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(hard_stop + 3 * RPC_TIMEOUT - time.perf_counter(), 0.1))
        self.elapsed = time.perf_counter() - begin
        self.missed = sum(missed)

    def report(self) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float | None:
            return lat[min(int(len(lat) * p), len(lat) - 1)] * 1000 if lat else None

        return {
            "ok": self.ok,
            "planned": self.planned,
            "missed": self.missed,
            "conflicts": self.conflicts,
            "rereads": self.rereads,
            "errors": self.errors,
            "elapsed": self.elapsed,
            "rate": self.ok / self.elapsed if self.elapsed else 0.0,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "max_ms": lat[-1] * 1000 if lat else None,
            "cpu_s": time.process_time(),
        }


def main() -> None:
    cfg = json.loads(sys.argv[1])
    load = Load(cfg)
    if cfg["mode"] == "closed":
        load.closed(float(cfg["seconds"]))
    else:
        load.paced(float(cfg["rate"]), float(cfg["seconds"]))
    print(json.dumps(load.report()))
    for ch in load.channels:
        ch.close()


if __name__ == "__main__":
    main()

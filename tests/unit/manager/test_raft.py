"""RaftNode over real 127.0.0.1 sockets: in-process clusters of 1-3 nodes.

Waits poll with deadlines (never fixed sleeps); every node a test starts is closed in
the `cluster` fixture's teardown, even when the test fails."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from manager.raft import (
    NoLeader,
    NotLeader,
    ProposalTimeout,
    RaftNode,
    RaftStatus,
    Timing,
)
from tests.daemons import wait_for

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

PASSWORD = "test-cluster-secret"


class KV:
    """Tiny deterministic state machine: b"key=value" sets, returns the old value."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.order: list[str] = []

    def apply(self, data: bytes) -> bytes:
        key, _, value = data.decode().partition("=")
        old = self.data.get(key, "")
        self.data[key] = value
        self.order.append(key)
        return old.encode()

    def snapshot(self) -> bytes:
        return json.dumps(self.data, sort_keys=True).encode()

    def restore(self, data: bytes) -> None:
        self.data = json.loads(data)
        self.order = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: dict[str, RaftNode] = {}
        self.machines: dict[str, KV] = {}
        self.leader_events: dict[str, list[str | None]] = {}

    def addrs(self, n: int) -> list[str]:
        return [f"127.0.0.1:{free_port()}" for _ in range(n)]

    def start(self, addr: str, peers: list[str], **kw: Any) -> RaftNode:
        machine = KV()
        events: list[str | None] = []
        node = RaftNode(
            self_addr=addr,
            peers=peers,
            password=PASSWORD,
            data_dir=self.root / addr.replace(":", "_"),
            machine=machine,
            on_leader_change=events.append,
            **kw,
        )
        node.start()
        self.nodes[addr], self.machines[addr], self.leader_events[addr] = node, machine, events
        return node

    def start_all(self, addrs: list[str], **kw: Any) -> None:
        for a in addrs:
            self.start(a, [p for p in addrs if p != a], **kw)

    def stop(self, addr: str) -> None:
        self.machines.pop(addr)
        self.nodes.pop(addr).close()

    def leader(self, timeout: float = 5.0) -> RaftNode:
        def find() -> RaftNode | None:
            leaders = [n for n in self.nodes.values() if n.status().is_leader]
            if len(leaders) == 1 and leaders[0].status().has_quorum:
                return leaders[0]
            return None

        return wait_for(find, timeout=timeout, what="a leader", interval=0.01)

    def converged(self, timeout: float = 5.0) -> None:
        """Every running node has applied the leader's commit index after a barrier."""
        leader = self.leader()
        leader.barrier(timeout=timeout)
        target = leader.status().commit_index

        def done() -> bool:
            return all(n.status().applied_index >= target for n in self.nodes.values())

        wait_for(done, timeout=timeout, what="all nodes to apply", interval=0.01)

    def close(self) -> None:
        for node in self.nodes.values():
            node.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


def test_single_node_propose_and_restart(cluster: Cluster) -> None:
    [addr] = cluster.addrs(1)
    node = cluster.start(addr, [])
    assert node.propose(b"a=1", timeout=5) == b""
    assert node.propose(b"a=2", timeout=5) == b"1"
    node.propose(b"b=3", timeout=5)
    cluster.stop(addr)

    node = cluster.start(addr, [])
    node.barrier(timeout=5)
    assert cluster.machines[addr].data == {"a": "2", "b": "3"}
    assert node.propose(b"a=4", timeout=5) == b"2"
    st = node.status()
    assert st.is_leader and st.leader == addr and st.members == (addr,)


def test_data_dir_is_private(cluster: Cluster) -> None:
    [addr] = cluster.addrs(1)
    cluster.start(addr, []).propose(b"k=v", timeout=5)
    data_dir = cluster.root / addr.replace(":", "_")
    assert data_dir.stat().st_mode & 0o777 == 0o700
    assert (data_dir / "raft.journal").exists()


def test_three_nodes_replicate_and_followers_refuse(cluster: Cluster) -> None:
    addrs = cluster.addrs(3)
    cluster.start_all(addrs)
    leader = cluster.leader()
    assert leader.propose(b"x=1", timeout=5) == b""
    cluster.converged()
    assert all(m.data == {"x": "1"} for m in cluster.machines.values())

    follower = next(n for n in cluster.nodes.values() if n is not leader)
    started = time.monotonic()
    with pytest.raises(NotLeader) as err:
        follower.propose(b"y=2", timeout=5)
    assert time.monotonic() - started < 0.5
    assert err.value.leader == leader.status().self_addr
    assert all(cluster.leader_events[a][-1] == leader.status().self_addr for a in addrs)


def test_failover_after_leader_close(cluster: Cluster) -> None:
    addrs = cluster.addrs(3)
    cluster.start_all(addrs)
    old = cluster.leader()
    old.propose(b"before=1", timeout=5)
    old_addr = old.status().self_addr

    started = time.monotonic()
    cluster.stop(old_addr)
    new = cluster.leader(timeout=5)
    assert new.propose(b"after=1", timeout=5) == b""
    failover = time.monotonic() - started
    assert failover < 5, failover
    assert new.status().self_addr != old_addr
    cluster.converged()
    assert all(m.data == {"before": "1", "after": "1"} for m in cluster.machines.values())


def test_quorum_loss_raises_within_timeout(cluster: Cluster) -> None:
    addrs = cluster.addrs(3)
    cluster.start_all(addrs)
    leader = cluster.leader()
    leader.propose(b"k=1", timeout=5)
    keep = leader.status().self_addr
    for a in addrs:
        if a != keep:
            cluster.stop(a)

    started = time.monotonic()
    with pytest.raises((NoLeader, ProposalTimeout)):
        leader.propose(b"k=2", timeout=1.5)
    assert time.monotonic() - started < 2.0
    wait_for(
        lambda: not leader.status().has_quorum,
        timeout=5.0,
        what="quorum loss to be seen",
        interval=0.01,
    )
    with pytest.raises(NoLeader, match="the swarm does not have a leader"):
        leader.propose(b"k=3", timeout=0.5)


def test_concurrent_proposals_apply_once_in_one_order(cluster: Cluster) -> None:
    addrs = cluster.addrs(3)
    cluster.start_all(addrs)
    leader = cluster.leader()
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            for i in range(50):
                leader.propose(f"w{w}-{i}={i}".encode(), timeout=10)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    cluster.converged()
    orders = [m.order for m in cluster.machines.values()]
    assert len(orders[0]) == len(set(orders[0])) == 400
    assert orders[0] == orders[1] == orders[2]


def test_snapshot_catch_up_after_compaction(cluster: Cluster) -> None:
    addrs = cluster.addrs(3)
    timing = Timing(compaction_min_entries=10)
    cluster.start_all(addrs, timing=timing)
    leader = cluster.leader()
    lagging = next(a for a in addrs if a != leader.status().self_addr)
    for i in range(30):
        leader.propose(f"a{i}={i}".encode(), timeout=5)
    cluster.stop(lagging)
    for i in range(60):
        leader.propose(f"b{i}={i}".encode(), timeout=5)
    data_dir = cluster.root / leader.status().self_addr.replace(":", "_")
    wait_for(
        lambda: (data_dir / "raft.dump").exists(),
        timeout=5.0,
        what="a compacted dump",
        interval=0.01,
    )

    cluster.start(lagging, [a for a in addrs if a != lagging], timing=timing)
    cluster.converged()
    snaps = {m.snapshot() for m in cluster.machines.values()}
    assert len(snaps) == 1
    assert len(cluster.machines[lagging].data) == 90


def test_membership_grow_and_shrink(cluster: Cluster) -> None:
    a, b, c = cluster.addrs(3)
    first = cluster.start(a, [])
    first.propose(b"k=1", timeout=5)

    # Order: the new node starts passive with peers = current members, then the
    # leader adds it (for 1 -> 2 the change needs the new node's ack to commit).
    cluster.start(b, [a], join=True)
    first.add_member(b, timeout=10)
    cluster.start(c, [a, b], join=True)
    cluster.leader().add_member(c, timeout=10)
    cluster.converged()
    assert all(m.data == {"k": "1"} for m in cluster.machines.values())
    assert all(n.status().members == tuple(sorted([a, b, c])) for n in cluster.nodes.values())

    leader = cluster.leader()
    victim = next(x for x in (a, b, c) if x != leader.status().self_addr)
    leader.remove_member(victim, timeout=10)
    cluster.stop(victim)
    rest = tuple(sorted(x for x in (a, b, c) if x != victim))
    wait_for(
        lambda: all(n.status().members == rest for n in cluster.nodes.values()),
        timeout=5.0,
        what="members to shrink",
        interval=0.01,
    )
    assert cluster.leader().propose(b"k=2", timeout=5) == b"1"


@pytest.mark.parametrize("compaction", [10, 5000], ids=["from-dump", "from-journal"])
def test_force_new_cluster_keeps_data(cluster: Cluster, compaction: int) -> None:
    a, b, c = cluster.addrs(3)
    timing = Timing(compaction_min_entries=compaction)
    # Grown with add_member, so the journal holds membership entries that a replay
    # would otherwise use to re-add the old members.
    cluster.start(a, [], timing=timing).propose(b"k=first", timeout=5)
    for new in (b, c):
        cluster.start(new, [a], join=True, timing=timing)
        cluster.leader().add_member(new, timeout=10)
    leader = cluster.leader()
    for i in range(25):
        leader.propose(f"k{i}={i}".encode(), timeout=5)
    cluster.converged()
    for x in (a, b, c):
        cluster.stop(x)

    RaftNode.reset_membership(cluster.root / a.replace(":", "_"), self_addr=a)
    node = cluster.start(a, [b, c], timing=timing)
    node.barrier(timeout=5)
    st: RaftStatus = node.status()
    assert st.is_leader and st.members == (a,) and st.has_quorum
    assert len(cluster.machines[a].data) == 26
    assert node.propose(b"k0=new", timeout=5) == b"0"

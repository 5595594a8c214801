"""A follower cut off while the others compact their Raft log catches up from a snapshot.

Its own lab (3 managers) with PYSWARM_RAFT_SNAPSHOT_INTERVAL low, so that a few dozen
writes make the leader snapshot and drop the entries the stopped follower missed: the
only way back is the snapshot (our own serialization, encrypted), and afterwards every
manager's store has the same version and the same digest.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from api import objects_pb2 as objects
from api import swarm_pb2 as swarm
from api import swarm_pb2_grpc as swarm_grpc
from deploy import lab as labs
from tests.daemons import wait_for

pytestmark = pytest.mark.e2e
MANAGERS = ("m1", "m2", "m3")


@pytest.fixture
def lab(monkeypatch: pytest.MonkeyPatch) -> Iterator[labs.Lab]:
    monkeypatch.setenv("PYSWARM_RAFT_SNAPSHOT_INTERVAL", "20")  # the daemons inherit it
    name = "k" + secrets.token_hex(3)
    try:
        yield labs.up(name, managers=3, workers=0, heartbeat="1s")
    finally:
        labs.down(name)


def info(lab: labs.Lab, node: str) -> swarm.SwarmInfo:
    with grpc.insecure_channel(lab.host(node).host) as channel:
        return swarm_grpc.SwarmStub(channel).Info(swarm.Empty(), timeout=10)


def test_a_follower_past_a_snapshot_catches_up_with_an_identical_state(lab: labs.Lab) -> None:
    listed = labs.run_cli(lab.host("m1"), "node", "ls", "--format", "json").splitlines()
    leader = next(d["Hostname"] for d in map(json.loads, listed) if d["ManagerStatus"] == "Leader")
    follower = next(m for m in MANAGERS if m != leader)
    labs.kill(lab, follower)
    killed_at = time.time()
    with grpc.insecure_channel(lab.host(leader).host) as channel:
        control = swarm_grpc.ControlStub(channel)
        for i in range(60):
            node = control.GetNode(swarm.NodeRef(node=leader), timeout=10)
            spec = objects.NodeSpec()
            spec.CopyFrom(node.spec)
            spec.labels[f"k{i}"] = str(i)
            control.UpdateNode(
                swarm.UpdateNodeRequest(node_id=node.meta.id, version=node.meta.version, spec=spec),
                timeout=10,
            )

    def dump(node: str) -> Path:
        return Path(lab.host(node).data_root) / "swarm" / "manager" / "raft" / "raft.dump"

    def dumped_since_kill(node: str) -> bool:
        return dump(node).exists() and dump(node).stat().st_mtime > killed_at

    # The start-up writes (nodes, the ingress network and its addresses) may already
    # have made every manager snapshot once; what counts is the one after the kill.
    wait_for(lambda: dumped_since_kill(leader), timeout=10, what="the leader's snapshot")
    assert not dumped_since_kill(follower)
    labs.restart(lab, follower)

    def identical() -> bool:
        states = {(i.store_version, i.store_digest) for i in (info(lab, m) for m in MANAGERS)}
        return len(states) == 1

    wait_for(identical, timeout=30, what="identical stores on every manager", interval=0.2)
    assert info(lab, follower).store_version > 60
    assert dumped_since_kill(follower)  # it was sent the snapshot, not the compacted entries

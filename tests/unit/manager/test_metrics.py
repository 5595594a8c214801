"""The manager's Prometheus collector: families and values from a fake manager."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest

from api import objects_pb2 as objects
from manager import store as st
from manager.metrics import PROPOSAL_SECONDS, SwarmCollector
from manager.raft import RaftStatus


def status(*, is_leader: bool = True, quorum: bool = True) -> RaftStatus:
    return RaftStatus(
        self_addr="10.0.0.1:2378",
        leader="10.0.0.1:2378" if is_leader else "10.0.0.2:2378",
        is_leader=is_leader,
        term=7,
        commit_index=42,
        applied_index=41,
        members=("10.0.0.1:2378", "10.0.0.2:2378", "10.0.0.3:2378"),
        reachable={"10.0.0.2:2378": True, "10.0.0.3:2378": False},
        has_quorum=quorum,
    )


@dataclass
class FakeRaft:
    st: RaftStatus

    def status(self) -> RaftStatus:
        return self.st


@dataclass
class FakeDispatcher:
    sessions: int = 0

    def session_count(self) -> int:
        return self.sessions


@dataclass
class FakeManager:
    raft: FakeRaft | None
    store: st.MemoryStore
    dispatcher: FakeDispatcher = field(default_factory=FakeDispatcher)


def store_with(*states: objects.NodeState.ValueType) -> st.MemoryStore:
    store = st.MemoryStore(propose=lambda data: store.apply(data))

    def create(tx: st.Tx) -> None:
        for i, state in enumerate(states):
            node = objects.Node(meta=objects.Meta(id=f"n{i}"), spec=objects.NodeSpec(name=f"h{i}"))
            node.status.state = state
            st.create_node(tx, node)

    store.update(create)
    return store


def samples(collector: SwarmCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in collector.collect()
        for s in family.samples
    }


def test_values_from_the_manager() -> None:
    store = store_with(objects.READY, objects.READY, objects.DOWN, objects.UNKNOWN)
    manager = FakeManager(raft=FakeRaft(status()), store=store, dispatcher=FakeDispatcher(3))
    got = samples(SwarmCollector(lambda: manager))
    assert got == {
        ("pyswarm_raft_term", ()): 7,
        ("pyswarm_raft_leader", ()): 1,
        ("pyswarm_raft_commit_index", ()): 42,
        ("pyswarm_raft_applied_index", ()): 41,
        ("pyswarm_raft_members", ()): 3,
        ("pyswarm_raft_has_quorum", ()): 1,
        ("pyswarm_store_version", ()): 1,
        ("pyswarm_nodes", (("state", "ready"),)): 2,
        ("pyswarm_nodes", (("state", "down"),)): 1,
        ("pyswarm_nodes", (("state", "unknown"),)): 1,
        ("pyswarm_nodes", (("state", "disconnected"),)): 0,
        ("pyswarm_dispatcher_sessions", ()): 3,
    }


def test_follower_without_quorum() -> None:
    manager = FakeManager(raft=FakeRaft(status(is_leader=False, quorum=False)), store=store_with())
    got = samples(SwarmCollector(lambda: manager))
    assert got[("pyswarm_raft_leader", ())] == 0
    assert got[("pyswarm_raft_has_quorum", ())] == 0
    assert got[("pyswarm_store_version", ())] == 0
    assert got[("pyswarm_nodes", (("state", "ready"),))] == 0


def test_no_manager_no_families() -> None:
    assert list(SwarmCollector(lambda: None).collect()) == []
    stopped = FakeManager(raft=None, store=store_with())
    assert list(SwarmCollector(lambda: stopped).collect()) == []


def test_follows_the_current_manager() -> None:
    current: list[FakeManager | None] = [None]
    collector = SwarmCollector(lambda: current[0])
    assert samples(collector) == {}
    current[0] = FakeManager(raft=FakeRaft(status()), store=store_with(objects.READY))
    assert samples(collector)[("pyswarm_nodes", (("state", "ready"),))] == 1
    current[0] = None
    assert samples(collector) == {}


def test_a_failing_manager_does_not_fail_the_scrape() -> None:
    class Broken(FakeRaft):
        def status(self) -> RaftStatus:
            raise RuntimeError("stopping")

    manager = FakeManager(raft=Broken(status()), store=store_with())
    registry = CollectorRegistry()
    registry.register(SwarmCollector(lambda: manager))
    assert b"pyswarm_raft" not in generate_latest(registry)


def test_exposition_and_proposal_histogram() -> None:
    manager = FakeManager(raft=FakeRaft(status()), store=store_with(objects.READY))
    registry = CollectorRegistry()
    registry.register(SwarmCollector(lambda: manager))
    registry.register(PROPOSAL_SECONDS)
    before = PROPOSAL_SECONDS._sum.get()
    PROPOSAL_SECONDS.observe(0.003)
    text = generate_latest(registry).decode()
    assert "# TYPE pyswarm_raft_term gauge" in text
    assert 'pyswarm_nodes{state="ready"} 1.0' in text
    assert "pyswarm_raft_proposal_seconds_bucket" in text
    assert PROPOSAL_SECONDS._sum.get() - before >= 0.003

"""Prometheus metrics of a manager, served with the engine's on `--metrics-addr`.

`SwarmCollector` reads everything at scrape time from whatever manager the daemon runs
now (the daemon's SwarmNode starts and stops its manager as the node joins, is
promoted, demoted or leaves), so there is nothing to keep in sync: with no manager it
yields nothing. The one thing counted as it happens is the latency of each proposal
(`PROPOSAL_SECONDS`, observed in `Manager._propose`), a process-wide histogram.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from api import objects_pb2 as objects
from manager import store as st

if TYPE_CHECKING:
    from manager.manager import Manager
    from manager.raft import RaftStatus

log = logging.getLogger(__name__)

PROPOSAL_SECONDS = Histogram(
    "pyswarm_raft_proposal_seconds",
    "Time for a store write to be committed and applied (on a follower: forwarded)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

NODE_STATES = {
    objects.READY: "ready",
    objects.DOWN: "down",
    objects.UNKNOWN: "unknown",
    objects.DISCONNECTED: "disconnected",
}


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class SwarmCollector(Collector):
    """Raft, store and dispatcher figures of the manager `current()` returns (or none)."""

    def __init__(self, current: Callable[[], Manager | Any | None]) -> None:
        self.current = current

    def collect(self) -> Iterator[Metric]:
        manager = self.current()
        raft = None if manager is None else manager.raft
        if raft is None:  # no manager here, or one not started yet
            return
        try:
            families = self._families(manager, raft.status())
        except Exception:  # a scrape must never fail because a manager is stopping
            log.debug("manager metrics skipped", exc_info=True)
            return
        yield from families

    @staticmethod
    def _families(manager: Manager | Any, status: RaftStatus) -> list[Metric]:
        nodes = manager.store.view(lambda tx: st.find_nodes(tx, by=st.All()))
        counts = dict.fromkeys(NODE_STATES.values(), 0)
        for node in nodes:
            state = NODE_STATES.get(node.status.state)
            if state is not None:
                counts[state] += 1
        by_state = GaugeMetricFamily(
            "pyswarm_nodes", "Nodes in the store by state", labels=["state"]
        )
        for state, count in counts.items():
            by_state.add_metric([state], count)
        return [
            _gauge("pyswarm_raft_term", "Current Raft term", status.term),
            _gauge("pyswarm_raft_leader", "1 if this manager is the Raft leader", status.is_leader),
            _gauge("pyswarm_raft_commit_index", "Raft commit index", status.commit_index),
            _gauge("pyswarm_raft_applied_index", "Raft last applied index", status.applied_index),
            _gauge("pyswarm_raft_members", "Raft members (managers)", len(status.members)),
            _gauge("pyswarm_raft_has_quorum", "1 if a quorum is reachable", status.has_quorum),
            _gauge(
                "pyswarm_store_version",
                "Version of the last applied store batch",
                manager.store.version,
            ),
            by_state,
            _gauge(
                "pyswarm_dispatcher_sessions",
                "Agent sessions open on this manager",
                manager.dispatcher.session_count(),
            ),
        ]

"""Property tests: whatever the scale sequence and failures, the invariants hold once
the swarm has settled."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as strat

from api import objects_pb2 as objects
from manager import store as st
from manager.orchestrator.common import may_keep, takes_new
from tests.unit.manager.orchestrator.test_harness import Swarm

pytestmark = [pytest.mark.unit, pytest.mark.timeout(120)]

NODES = ["a", "b", "c"]
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# A step: scale to n, or fail the task of the k-th live slot (k modulo the live count).
steps = strat.lists(
    strat.one_of(
        strat.tuples(strat.just("scale"), strat.integers(0, 7)),
        strat.tuples(strat.just("fail"), strat.integers(0, 7)),
        strat.tuples(strat.just("down"), strat.sampled_from(NODES)),
    ),
    max_size=12,
)


def converge(swarm: Swarm) -> None:
    swarm.advance(10)  # past any restart delay
    swarm.settle(nodes=[n for n in NODES if _up(swarm, n)] or None)
    swarm.advance(10)
    swarm.settle(nodes=[n for n in NODES if _up(swarm, n)] or None)


def _up(swarm: Swarm, node_id: str) -> bool:
    node = swarm.store.view(lambda tx: st.get_node(tx, node_id))
    return node is not None and node.status.state != objects.DOWN


@SETTINGS
@given(replicas=strat.integers(0, 6), script=steps)
def test_replicated_invariants(replicas: int, script: list[tuple[str, object]]) -> None:
    swarm = Swarm()
    for node in NODES:
        swarm.add_node(node)
    sid = swarm.create_service(replicas=replicas)
    swarm.settle(nodes=NODES)
    for op, arg in script:
        live = swarm.live(sid)
        if op == "scale":
            assert isinstance(arg, int)
            replicas = arg
            swarm.scale(sid, replicas)
        elif op == "fail" and live:
            assert isinstance(arg, int)
            swarm.set_state(live[arg % len(live)].meta.id, objects.TASK_FAILED, exit_code=1)
        elif op == "down":
            swarm.change_node(str(arg), lambda n: setattr(n.status, "state", objects.DOWN))
        swarm.orch.reconcile_all()
        per_slot = Counter(t.slot for t in swarm.live(sid))
        assert all(n == 1 for n in per_slot.values())  # at every step, not only at the end
    converge(swarm)
    live = swarm.live(sid)
    per_slot = Counter(t.slot for t in live)
    assert all(n == 1 for n in per_slot.values())
    assert len(per_slot) == replicas
    assert {t.desired_state for t in live} <= {objects.TASK_RUNNING}


@SETTINGS
@given(
    ops=strat.lists(
        strat.tuples(
            strat.sampled_from([*NODES, "d"]),
            strat.sampled_from(["drain", "pause", "active", "remove", "label", "unlabel"]),
        ),
        max_size=10,
    )
)
def test_global_invariants(ops: list[tuple[str, str]]) -> None:
    swarm = Swarm()
    for node in NODES:
        swarm.add_node(node, labels={"run": "yes"})

    def edit(spec: objects.ServiceSpec) -> None:
        spec.task.placement.constraints.append("node.labels.run==yes")

    sid = swarm.create_service("g", mode=objects.GLOBAL, edit=edit)
    swarm.orch.reconcile_all()
    for node_id, op in ops:
        _apply(swarm, node_id, op)
        swarm.orch.reconcile_all()
    converge(swarm)
    nodes = swarm.store.view(lambda tx: st.find_nodes(tx))
    service = swarm.service(sid)
    eligible = sorted(n.meta.id for n in nodes if takes_new(n, service))
    live = [t for t in swarm.live(sid) if t.desired_state == objects.TASK_RUNNING]
    on = Counter(t.node_id for t in live)
    assert all(n == 1 for n in on.values())
    by_id = {n.meta.id: n for n in nodes}
    assert set(eligible) <= set(on)  # every eligible node runs one...
    assert all(may_keep(by_id.get(node_id), service) for node_id in on)  # ...and only those


def _apply(swarm: Swarm, node_id: str, op: str) -> None:
    exists = swarm.store.view(lambda tx: st.get_node(tx, node_id)) is not None
    if op == "remove":
        if exists:
            swarm.remove_node(node_id)
        return
    if not exists:
        swarm.add_node(node_id)
    availability = {"drain": objects.DRAIN, "pause": objects.PAUSE, "active": objects.ACTIVE}
    if op in availability:
        swarm.change_node(node_id, lambda n: setattr(n.spec, "availability", availability[op]))
    elif op == "label":
        swarm.change_node(node_id, lambda n: n.spec.labels.update({"run": "yes"}))
    else:

        def unlabel(node: objects.Node) -> None:
            node.spec.labels.pop("run", None)

        swarm.change_node(node_id, unlabel)

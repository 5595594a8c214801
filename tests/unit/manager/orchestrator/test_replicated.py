"""Replicated and global services: creating, scaling, following nodes."""

from __future__ import annotations

import pytest

from api import objects_pb2 as objects
from tests.unit.manager.orchestrator.test_harness import Swarm

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


@pytest.fixture
def swarm() -> Swarm:
    return Swarm()


def test_create_makes_one_task_per_slot(swarm: Swarm) -> None:
    sid = swarm.create_service(replicas=3)
    swarm.orch.reconcile_all()
    tasks = swarm.live(sid)
    assert [t.slot for t in tasks] == [1, 2, 3]
    for task in tasks:
        assert task.desired_state == objects.TASK_RUNNING
        assert task.status.state == objects.TASK_NEW
        assert task.status.message == "created"
        assert task.status.timestamp == swarm.clock.now
        assert (task.service_id, task.service_name, task.spec_version) == (sid, "web", 1)
        assert task.spec.container.image == "busybox"
        assert len(task.meta.id) == 25
    swarm.orch.reconcile_all()  # level-triggered: a second pass changes nothing
    assert len(swarm.tasks(sid)) == 3


def test_scale_up_then_down_removes_highest_slots(swarm: Swarm) -> None:
    sid = swarm.create_service(replicas=2)
    swarm.orch.reconcile_all()
    swarm.scale(sid, 5)
    swarm.orch.reconcile_all()
    assert swarm.running_slots(sid) == [1, 2, 3, 4, 5]
    swarm.scale(sid, 2)
    swarm.orch.reconcile_all()
    assert swarm.running_slots(sid) == [1, 2]
    gone = [t for t in swarm.tasks(sid) if t.slot > 2]
    assert {t.desired_state for t in gone} == {objects.TASK_SHUTDOWN}
    swarm.scale(sid, 3)
    swarm.orch.reconcile_all()
    assert swarm.running_slots(sid) == [1, 2, 3]


def test_scale_down_prefers_crowded_nodes(swarm: Swarm) -> None:
    for node in ("a", "b", "c"):
        swarm.add_node(node)
    sid = swarm.create_service(replicas=4)
    swarm.orch.reconcile_all()
    placement = {1: "a", 2: "a", 3: "b", 4: "c"}
    for task in swarm.live(sid):
        swarm.set_state(task.meta.id, objects.TASK_RUNNING, node_id=placement[task.slot])
    swarm.scale(sid, 3)
    swarm.orch.reconcile_all()
    assert swarm.running_slots(sid) == [1, 3, 4]  # the second copy on "a" went


def test_task_on_down_node_is_replaced_in_its_slot(swarm: Swarm) -> None:
    swarm.add_node("a")
    swarm.add_node("b")
    sid = swarm.create_service(replicas=2)
    swarm.settle(nodes=["a", "b"])
    before = {t.slot: t for t in swarm.live(sid)}
    on_a = next(t for t in before.values() if t.node_id == "a")
    swarm.change_node("a", lambda n: setattr(n.status, "state", objects.DOWN))
    swarm.orch.reconcile_all()
    assert swarm.task(on_a.meta.id).desired_state == objects.TASK_SHUTDOWN
    after = {t.slot: t for t in swarm.live(sid)}
    assert sorted(after) == [1, 2]
    fresh = after[on_a.slot]
    assert fresh.meta.id != on_a.meta.id
    assert fresh.desired_state == objects.TASK_RUNNING  # at once, no restart delay
    assert not fresh.node_id


def test_drained_and_removed_nodes_lose_their_tasks(swarm: Swarm) -> None:
    for node in ("a", "b", "c"):
        swarm.add_node(node)
    sid = swarm.create_service(replicas=3)
    swarm.settle(nodes=["a", "b", "c"])
    swarm.change_node("a", lambda n: setattr(n.spec, "availability", objects.DRAIN))
    swarm.remove_node("b")
    swarm.settle(nodes=["c"])
    live = swarm.live(sid)
    assert [t.slot for t in live] == [1, 2, 3]
    assert {t.node_id for t in live} == {"c"}


# ---- global ----------------------------------------------------------------------------


def _global(swarm: Swarm, constraint: str = "") -> str:
    def edit(spec: objects.ServiceSpec) -> None:
        if constraint:
            spec.task.placement.constraints.append(constraint)

    return swarm.create_service("agent", mode=objects.GLOBAL, edit=edit)


def _nodes_of(swarm: Swarm, sid: str) -> list[str]:
    return sorted(t.node_id for t in swarm.live(sid))


def test_global_follows_nodes(swarm: Swarm) -> None:
    swarm.add_node("a")
    swarm.add_node("b")
    sid = _global(swarm)
    swarm.orch.reconcile_all()
    assert _nodes_of(swarm, sid) == ["a", "b"]
    assert all(t.slot == 0 for t in swarm.live(sid))
    swarm.add_node("c")
    swarm.orch.reconcile_all()
    assert _nodes_of(swarm, sid) == ["a", "b", "c"]
    swarm.change_node("b", lambda n: setattr(n.spec, "availability", objects.DRAIN))
    swarm.remove_node("c")
    swarm.orch.reconcile_all()
    assert _nodes_of(swarm, sid) == ["a"]
    swarm.change_node("b", lambda n: setattr(n.spec, "availability", objects.ACTIVE))
    swarm.orch.reconcile_all()
    assert _nodes_of(swarm, sid) == ["a", "b"]


def test_global_pause_keeps_and_down_is_left_alone(swarm: Swarm) -> None:
    swarm.add_node("a")
    swarm.add_node("b")
    sid = _global(swarm)
    swarm.settle(nodes=[])
    swarm.change_node("a", lambda n: setattr(n.spec, "availability", objects.PAUSE))
    swarm.change_node("b", lambda n: setattr(n.status, "state", objects.DOWN))
    swarm.orch.reconcile_all()
    assert _nodes_of(swarm, sid) == ["a", "b"]
    assert len(swarm.tasks(sid)) == 2
    swarm.add_node("c", availability=objects.PAUSE)
    swarm.orch.reconcile_all()
    assert _nodes_of(swarm, sid) == ["a", "b"]


def test_global_follows_label_changes(swarm: Swarm) -> None:
    swarm.add_node("a", labels={"zone": "x"})
    swarm.add_node("b", labels={"zone": "y"})
    sid = _global(swarm, "node.labels.zone==x")
    swarm.orch.reconcile_all()
    assert _nodes_of(swarm, sid) == ["a"]
    swarm.change_node("b", lambda n: n.spec.labels.update({"zone": "x"}))
    swarm.change_node("a", lambda n: n.spec.labels.update({"zone": "z"}))
    swarm.orch.reconcile_all()
    assert _nodes_of(swarm, sid) == ["b"]


def test_global_task_failure_restarts_on_same_node(swarm: Swarm) -> None:
    swarm.add_node("a")
    sid = _global(swarm)
    swarm.settle(nodes=[])
    (task,) = swarm.live(sid)
    swarm.set_state(task.meta.id, objects.TASK_FAILED, exit_code=1)
    swarm.orch.reconcile_all()
    (fresh,) = swarm.live(sid)
    assert fresh.node_id == "a" and fresh.desired_state == objects.TASK_READY

"""The reaper: history per slot, and the tasks of deleted services."""

from __future__ import annotations

import pytest

from api import objects_pb2 as objects
from manager import store as st
from tests.unit.manager.orchestrator.test_harness import Swarm

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


@pytest.fixture
def swarm() -> Swarm:
    return Swarm()


def set_history(swarm: Swarm, limit: int) -> None:
    cluster = objects.Cluster(meta=objects.Meta(id="c1"))
    cluster.spec.task_history_limit = limit
    swarm.store.update(lambda tx: st.create_cluster(tx, cluster))


def crash(swarm: Swarm, sid: str, times: int) -> None:
    for _ in range(times):
        (task,) = swarm.live(sid)
        swarm.set_state(task.meta.id, objects.TASK_FAILED, exit_code=1, node_id="a")
        swarm.orch.reconcile_all()
        swarm.advance(0)


def test_history_is_kept_per_slot(swarm: Swarm) -> None:
    set_history(swarm, 3)
    swarm.add_node("a")
    sid = swarm.create_service(replicas=1, edit=lambda s: setattr(s.task.restart, "delay", 0))
    swarm.orch.reconcile_all()
    crash(swarm, sid, 6)
    tasks = swarm.tasks(sid)
    assert len(tasks) == 3
    assert sum(t.desired_state == objects.TASK_RUNNING for t in tasks) == 1
    assert {t.slot for t in tasks} == {1}


def test_default_history_is_five(swarm: Swarm) -> None:
    swarm.add_node("a")
    sid = swarm.create_service(replicas=1, edit=lambda s: setattr(s.task.restart, "delay", 0))
    swarm.orch.reconcile_all()
    crash(swarm, sid, 8)
    assert len(swarm.tasks(sid)) == 5


def test_deleted_service_tasks_are_removed_then_deleted(swarm: Swarm) -> None:
    swarm.add_node("a")
    sid = swarm.create_service(replicas=3)
    swarm.orch.reconcile_all()
    placed = swarm.live(sid)[:2]
    for task in placed:
        swarm.set_state(task.meta.id, objects.TASK_RUNNING, node_id="a")
    swarm.delete_service(sid)
    swarm.orch.reconcile_all()
    tasks = swarm.tasks(sid)  # the never-assigned one is gone at once
    assert sorted(t.meta.id for t in tasks) == sorted(t.meta.id for t in placed)
    assert {t.desired_state for t in tasks} == {objects.TASK_REMOVE}
    swarm.set_state(placed[0].meta.id, objects.TASK_SHUTDOWN)
    swarm.orch.reconcile_all()
    assert [t.meta.id for t in swarm.tasks(sid)] == [placed[1].meta.id]
    swarm.change_node("a", lambda n: setattr(n.status, "state", objects.DOWN))
    swarm.orch.reconcile_all()
    assert swarm.tasks(sid) == []

"""Jobs: completions, concurrency, restarts on failure, iterations, global jobs."""

from __future__ import annotations

import pytest

from api import objects_pb2 as objects
from tests.unit.manager.orchestrator.test_harness import Swarm

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


@pytest.fixture
def swarm() -> Swarm:
    return Swarm()


def job(swarm: Swarm, *, replicas: int, concurrent: int = 0) -> str:
    def edit(spec: objects.ServiceSpec) -> None:
        spec.max_concurrent = concurrent
        spec.task.restart.delay = 0

    swarm.add_node("a")
    return swarm.create_service("batch", replicas=replicas, mode=objects.REPLICATED_JOB, edit=edit)


def complete_all(swarm: Swarm, sid: str, *, exit_code: int = 0) -> int:
    live = swarm.live(sid)
    state = objects.TASK_COMPLETE if exit_code == 0 else objects.TASK_FAILED
    for task in live:
        swarm.set_state(task.meta.id, state, exit_code=exit_code, node_id="a")
    swarm.orch.reconcile_all()
    return len(live)


def completed(swarm: Swarm, sid: str) -> int:
    return sum(t.status.state == objects.TASK_COMPLETE for t in swarm.tasks(sid))


def test_replicated_job_runs_n_completions_at_most_m_at_once(swarm: Swarm) -> None:
    sid = job(swarm, replicas=5, concurrent=2)
    swarm.orch.reconcile_all()
    live = swarm.live(sid)
    assert len(live) == 2
    assert {t.desired_state for t in live} == {objects.TASK_COMPLETE}
    assert complete_all(swarm, sid) == 2
    assert complete_all(swarm, sid) == 2
    assert complete_all(swarm, sid) == 1
    assert completed(swarm, sid) == 5
    assert swarm.live(sid) == []
    assert sorted(t.slot for t in swarm.tasks(sid)) == [1, 2, 3, 4, 5]


def test_job_failure_restarts_in_slot_and_rerun_with_new_iteration(swarm: Swarm) -> None:
    sid = job(swarm, replicas=2)
    swarm.orch.reconcile_all()
    complete_all(swarm, sid, exit_code=1)
    swarm.advance(0)
    live = swarm.live(sid)
    assert sorted(t.slot for t in live) == [1, 2]
    assert {t.desired_state for t in live} == {objects.TASK_COMPLETE}
    complete_all(swarm, sid)
    assert swarm.live(sid) == [] and completed(swarm, sid) == 2
    swarm.update_service(sid, lambda s: None, force=True)  # bumps job_iteration
    swarm.orch.reconcile_all()
    live = swarm.live(sid)
    assert len(live) == 2 and {t.job_iteration for t in live} == {1}
    assert swarm.service(sid).update_status.state == objects.UpdateStatus.COMPLETED


def test_global_job_completes_once_per_node(swarm: Swarm) -> None:
    swarm.add_node("a")
    swarm.add_node("b")
    sid = swarm.create_service("once", mode=objects.GLOBAL_JOB)
    swarm.orch.reconcile_all()
    for task in swarm.live(sid):
        swarm.set_state(task.meta.id, objects.TASK_COMPLETE)
    swarm.orch.reconcile_all()
    assert swarm.live(sid) == []
    swarm.add_node("c")
    swarm.orch.reconcile_all()
    assert [t.node_id for t in swarm.live(sid)] == ["c"]

"""The restart supervisor: conditions, delays on the fake clock, attempts, new leaders."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from api import objects_pb2 as objects
from manager.orchestrator import Orchestrator
from tests.unit.manager.orchestrator.test_harness import Swarm

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


@pytest.fixture
def swarm() -> Swarm:
    return Swarm()


def restart(
    condition: objects.RestartCondition.ValueType = objects.RESTART_ANY,
    *,
    delay: float | None = None,
    max_attempts: int = 0,
    window: float = 0.0,
) -> Callable[[objects.ServiceSpec], None]:
    def edit(spec: objects.ServiceSpec) -> None:
        policy = spec.task.restart
        policy.condition = condition
        if delay is not None:
            policy.delay = delay
        policy.max_attempts = max_attempts
        policy.window = window

    return edit


def start_one(swarm: Swarm, edit: Callable[[objects.ServiceSpec], None]) -> tuple[str, str]:
    swarm.add_node("a")
    sid = swarm.create_service(replicas=1, edit=edit)
    swarm.settle(nodes=["a"])
    (task,) = swarm.live(sid)
    return sid, task.meta.id


def fail(swarm: Swarm, sid: str, *, exit_code: int = 1) -> objects.Task:
    """The live task of slot 1 fails; the orchestrator reacts. Its replacement, if any."""
    (task,) = swarm.live(sid)
    state = objects.TASK_COMPLETE if exit_code == 0 else objects.TASK_FAILED
    swarm.set_state(task.meta.id, state, exit_code=exit_code)
    swarm.orch.reconcile_all()
    assert swarm.task(task.meta.id).desired_state == objects.TASK_SHUTDOWN
    live = swarm.live(sid)
    return live[0] if live else objects.Task()


def test_failed_task_is_replaced_after_the_delay(swarm: Swarm) -> None:
    sid, old = start_one(swarm, restart(delay=10))
    fresh = fail(swarm, sid)
    assert fresh.slot == 1 and fresh.meta.id != old
    assert fresh.desired_state == objects.TASK_READY
    swarm.advance(9.9)
    assert swarm.task(fresh.meta.id).desired_state == objects.TASK_READY
    swarm.advance(0.2)
    assert swarm.task(fresh.meta.id).desired_state == objects.TASK_RUNNING


def test_default_delay_is_five_seconds(swarm: Swarm) -> None:
    sid, _ = start_one(swarm, restart())
    fresh = fail(swarm, sid)
    swarm.advance(4.9)
    assert swarm.task(fresh.meta.id).desired_state == objects.TASK_READY
    swarm.advance(0.2)
    assert swarm.task(fresh.meta.id).desired_state == objects.TASK_RUNNING


def test_max_attempts_within_window(swarm: Swarm) -> None:
    sid, _ = start_one(swarm, restart(delay=0, max_attempts=2, window=60))
    for _ in range(2):
        assert fail(swarm, sid).meta.id
        swarm.settle(nodes=["a"])
    assert not fail(swarm, sid).meta.id  # a third failure within 60 s: no restart
    swarm.orch.reconcile_all()
    assert swarm.live(sid) == []  # and the slot is not refilled behind the policy's back
    swarm.clock.now += 61  # the window moved on: the next spec change refills the slot
    swarm.scale(sid, 1)
    swarm.update_service(sid, lambda s: None, force=True)
    swarm.orch.reconcile_all()
    assert swarm.running_slots(sid) == [1]


def test_condition_none_never_restarts(swarm: Swarm) -> None:
    sid, _ = start_one(swarm, restart(objects.RESTART_NONE))
    assert not fail(swarm, sid).meta.id
    swarm.advance(100)
    assert swarm.live(sid) == []


def test_on_failure_skips_clean_exit_but_restarts_failure(swarm: Swarm) -> None:
    sid, _ = start_one(swarm, restart(objects.RESTART_ON_FAILURE, delay=0))
    assert fail(swarm, sid, exit_code=1).meta.id
    swarm.advance(0)
    swarm.settle(nodes=["a"])
    assert not fail(swarm, sid, exit_code=0).meta.id


def test_condition_any_restarts_clean_exit(swarm: Swarm) -> None:
    sid, _ = start_one(swarm, restart(objects.RESTART_ANY, delay=0))
    assert fail(swarm, sid, exit_code=0).meta.id


def test_new_leader_promotes_ready_tasks_when_due(swarm: Swarm) -> None:
    sid, _ = start_one(swarm, restart(delay=10))
    fresh = fail(swarm, sid)
    swarm.clock.now += 4
    leader = Orchestrator(swarm.store, clock=swarm.clock, wall=swarm.clock)
    leader.reconcile_all()
    assert swarm.task(fresh.meta.id).desired_state == objects.TASK_READY
    swarm.clock.now += 6.5
    leader.tick()
    assert swarm.task(fresh.meta.id).desired_state == objects.TASK_RUNNING


def test_new_leader_promotes_overdue_ready_tasks_at_once(swarm: Swarm) -> None:
    sid, _ = start_one(swarm, restart(delay=10))
    fresh = fail(swarm, sid)
    swarm.clock.now += 30
    Orchestrator(swarm.store, clock=swarm.clock, wall=swarm.clock).reconcile_all()
    assert swarm.task(fresh.meta.id).desired_state == objects.TASK_RUNNING

"""The rolling updater: stop-first, start-first, parallelism, pause and rollback."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from api import objects_pb2 as objects
from tests.unit.manager.orchestrator.test_harness import US, Swarm

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


@pytest.fixture
def swarm() -> Swarm:
    return Swarm()


NODES = ["a", "b", "c"]


def config(
    *,
    parallelism: int = 1,
    order: objects.UpdateOrder.ValueType = objects.STOP_FIRST,
    action: objects.FailureAction.ValueType = objects.FAILURE_PAUSE,
    monitor: float = 5.0,
    delay: float = 0.0,
) -> Callable[[objects.ServiceSpec], None]:
    def edit(spec: objects.ServiceSpec) -> None:
        for cfg in (spec.update, spec.rollback):
            cfg.parallelism = parallelism
            cfg.order = order
            cfg.failure_action = action
            cfg.monitor = monitor
            cfg.delay = delay

    return edit


def image(name: str) -> Callable[[objects.ServiceSpec], None]:
    def edit(spec: objects.ServiceSpec) -> None:
        spec.task.container.image = name

    return edit


def running(swarm: Swarm, sid: str, *, replicas: int, **kwargs: object) -> None:
    for node in NODES:
        swarm.add_node(node)
    edit = config(**kwargs)  # type: ignore[arg-type]
    assert swarm.create_service(replicas=replicas, edit=edit) == sid
    swarm.settle(nodes=NODES)


def versions(swarm: Swarm, sid: str) -> list[int]:
    return [t.spec_version for t in swarm.live(sid)]


def test_stop_first_with_parallelism(swarm: Swarm) -> None:
    running(swarm, "svc1", replicas=4, parallelism=2, monitor=1)
    swarm.update_service("svc1", image("nginx"))
    swarm.orch.reconcile_all()
    # Slots 1 and 2 are stopped first: no new task until the old ones ended.
    assert swarm.running_slots("svc1") == [3, 4]
    swarm.agents(nodes=NODES)  # the old ones stop
    swarm.orch.reconcile_all()
    assert versions(swarm, "svc1") == [2, 2, 1, 1]
    swarm.settle(nodes=NODES)  # new ones run: the next batch starts
    assert versions(swarm, "svc1") == [2, 2, 2, 2]
    assert swarm.service("svc1").update_status.state == US.UPDATING  # still monitoring
    swarm.advance(1.1)
    status = swarm.service("svc1").update_status
    assert (status.state, status.message) == (US.COMPLETED, "update completed")
    assert status.completed_at == swarm.clock.now
    assert {t.spec.container.image for t in swarm.live("svc1")} == {"nginx"}


def test_start_first_keeps_old_until_new_runs(swarm: Swarm) -> None:
    running(swarm, "svc1", replicas=2, order=objects.START_FIRST)
    swarm.update_service("svc1", image("nginx"))
    swarm.orch.reconcile_all()
    live = swarm.live("svc1")
    assert [(t.slot, t.spec_version) for t in live] == [(1, 1), (1, 2), (2, 1)]
    swarm.agents(nodes=NODES)
    swarm.orch.reconcile_all()
    assert [(t.slot, t.spec_version) for t in swarm.live("svc1")] == [(1, 2), (2, 1), (2, 2)]
    swarm.settle(nodes=NODES)
    swarm.advance(5.1)
    assert versions(swarm, "svc1") == [2, 2]
    assert swarm.service("svc1").update_status.state == US.COMPLETED


def test_delay_between_batches(swarm: Swarm) -> None:
    running(swarm, "svc1", replicas=2, delay=10)
    swarm.update_service("svc1", image("nginx"))
    swarm.settle(nodes=NODES)
    assert versions(swarm, "svc1") == [2, 1]
    swarm.advance(9)
    swarm.settle(nodes=NODES)
    assert versions(swarm, "svc1") == [2, 1]
    swarm.advance(1.5)
    swarm.settle(nodes=NODES)
    assert versions(swarm, "svc1") == [2, 2]


def fail_new_tasks(swarm: Swarm, sid: str) -> str:
    new = [t for t in swarm.live(sid) if t.spec_version == swarm.service(sid).spec_version]
    assert new
    swarm.set_state(new[0].meta.id, objects.TASK_FAILED, exit_code=1)
    swarm.orch.reconcile_all()
    return new[0].meta.id


def test_failure_pauses_the_update(swarm: Swarm) -> None:
    running(swarm, "svc1", replicas=3, delay=10)
    swarm.update_service("svc1", image("broken"))
    swarm.settle(nodes=NODES)
    failed = fail_new_tasks(swarm, "svc1")
    status = swarm.service("svc1").update_status
    assert status.state == US.PAUSED
    assert status.message == f"update paused due to failure or early termination of task {failed}"
    for _ in range(3):
        swarm.settle(nodes=NODES)
        swarm.advance(11)
    # Paused: only the failed slot (restarted with the current spec) is new.
    assert versions(swarm, "svc1") == [2, 1, 1]
    swarm.update_service("svc1", image("fixed"))  # a new spec resumes
    for _ in range(5):
        swarm.settle(nodes=NODES)
        swarm.advance(11)
    assert {t.spec.container.image for t in swarm.live("svc1")} == {"fixed"}
    assert swarm.service("svc1").update_status.state == US.COMPLETED


def test_failure_rolls_back(swarm: Swarm) -> None:
    running(swarm, "svc1", replicas=2, action=objects.FAILURE_ROLLBACK)
    swarm.update_service("svc1", image("broken"))
    swarm.settle(nodes=NODES)
    failed = fail_new_tasks(swarm, "svc1")
    service = swarm.service("svc1")
    assert service.update_status.state == US.ROLLBACK_STARTED
    assert service.update_status.message == (
        f"update rolled back due to failure or early termination of task {failed}"
    )
    assert service.spec_version == 3
    assert service.spec.task.container.image == "busybox"
    assert service.previous_spec.task.container.image == "broken"
    for _ in range(4):
        swarm.settle(nodes=NODES)
        swarm.advance(6)
    assert {t.spec.container.image for t in swarm.live("svc1")} == {"busybox"}
    status = swarm.service("svc1").update_status
    assert (status.state, status.message) == (US.ROLLBACK_COMPLETED, "rollback completed")


def test_newer_spec_supersedes_a_running_update(swarm: Swarm) -> None:
    running(swarm, "svc1", replicas=3, monitor=0)
    swarm.update_service("svc1", image("v2"))
    swarm.settle(nodes=NODES)
    swarm.update_service("svc1", image("v3"))
    for _ in range(4):
        swarm.settle(nodes=NODES)
        swarm.advance(0.1)
    assert {t.spec.container.image for t in swarm.live("svc1")} == {"v3"}
    assert swarm.running_slots("svc1") == [1, 2, 3]
    assert swarm.service("svc1").update_status.state == US.COMPLETED


def test_scale_alone_replaces_nothing(swarm: Swarm) -> None:
    running(swarm, "svc1", replicas=2)
    before = {t.meta.id for t in swarm.live("svc1")}
    swarm.scale("svc1", 3)
    swarm.settle(nodes=NODES)
    assert before < {t.meta.id for t in swarm.live("svc1")}


def test_rollback_stops_an_unassigned_replacement_itself(swarm: Swarm) -> None:
    # The failed task's replacement waits (restart delay) unassigned when the rollback
    # starts: no agent will ever report it stopped, so the orchestrator must.
    running(swarm, "svc1", replicas=1, action=objects.FAILURE_ROLLBACK)
    swarm.update_service("svc1", image("broken"))
    swarm.settle(nodes=NODES)
    fail_new_tasks(swarm, "svc1")
    for _ in range(3):  # no agents run: nothing new is ever assigned
        swarm.orch.reconcile_all()
        swarm.advance(6)
    stopped = [t for t in swarm.tasks("svc1") if t.status.message == "shutdown before assignment"]
    assert stopped and all(t.status.state == objects.TASK_SHUTDOWN for t in stopped)
    assert [t.spec.container.image for t in swarm.live("svc1")] == ["busybox"]

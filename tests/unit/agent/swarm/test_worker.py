"""The worker over the simulated executor: assignments, removal, batching, reconnects."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator

import pytest

from agent.swarm.simulated import SimulatedExecutor
from agent.swarm.worker import Runner, Worker
from api import objects_pb2 as objects

pytestmark = pytest.mark.unit

TIMEOUT = 10.0


class Recorder:
    """Collects reported batches; waits on a condition, not on a clock."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, objects.TaskStatus]]] = []
        self.latest: dict[str, objects.TaskStatus] = {}
        self.cond = threading.Condition()

    def __call__(self, batch: list[tuple[str, objects.TaskStatus]]) -> None:
        with self.cond:
            self.batches.append(batch)
            self.latest.update(batch)
            self.cond.notify_all()

    def states(self, task_id: str) -> list[int]:
        with self.cond:
            return [s.state for b in self.batches for tid, s in b if tid == task_id]

    def until(self, predicate: Callable[[], bool], what: str) -> None:
        with self.cond:
            assert self.cond.wait_for(predicate, timeout=TIMEOUT), f"timed out: {what}"

    def state_is(self, task_id: str, state: int) -> None:
        self.until(
            lambda: self.latest.get(task_id, objects.TaskStatus()).state == state, str(state)
        )


def task(tid: str, desired: int = objects.TASK_RUNNING) -> objects.Task:
    t = objects.Task(service_name="web", slot=1, desired_state=desired)  # type: ignore[arg-type]
    t.meta.id = tid
    t.status.state = objects.TASK_ASSIGNED
    return t


@pytest.fixture
def runner() -> Iterator[Runner]:
    r = Runner(threads=4)
    yield r
    r.stop()


@pytest.fixture
def setup(runner: Runner) -> Iterator[tuple[Worker, SimulatedExecutor, Recorder]]:
    executor = SimulatedExecutor(random.Random(1), delays=(0.0, 0.0))
    rec = Recorder()
    worker = Worker(executor, report=rec, runner=runner, flush_interval=0.01)
    yield worker, executor, rec
    worker.stop()


def test_full_set_runs_tasks_and_increments_update_them(setup):
    worker, executor, rec = setup
    worker.assign([task("a"), task("b")], full=True)
    rec.state_is("a", objects.TASK_RUNNING)
    rec.state_is("b", objects.TASK_RUNNING)
    assert executor.existing() == {"a", "b"}
    worker.assign([task("b", objects.TASK_SHUTDOWN)], full=False)
    rec.state_is("b", objects.TASK_SHUTDOWN)
    assert worker.status("a").state == objects.TASK_RUNNING


def test_removed_and_missing_tasks_are_shut_down_and_their_containers_removed(setup):
    worker, executor, rec = setup
    worker.assign([task("a"), task("b"), task("c")], full=True)
    for tid in "abc":
        rec.state_is(tid, objects.TASK_RUNNING)
    worker.assign([], full=False, removed=["a"])
    worker.assign([task("c")], full=True)  # b is no longer assigned
    rec.until(lambda: executor.existing() == {"c"}, "a and b removed")
    rec.until(lambda: set(worker.statuses()) == {"c"}, "a and b forgotten")
    assert executor.controllers["a"].exit is not None  # shut down before removal


def test_desired_remove_shuts_down_and_removes_the_container(setup):
    worker, executor, rec = setup
    worker.assign([task("a")], full=True)
    rec.state_is("a", objects.TASK_RUNNING)
    worker.assign([task("a", objects.TASK_REMOVE)], full=False)
    rec.state_is("a", objects.TASK_SHUTDOWN)
    rec.until(lambda: executor.existing() == set(), "container removed")


def test_desired_ready_waits_at_ready_until_running(setup):
    worker, executor, rec = setup
    worker.assign([task("a", objects.TASK_READY)], full=True)
    rec.state_is("a", objects.TASK_READY)
    assert not executor.controllers["a"].started
    worker.assign([task("a")], full=False)
    rec.state_is("a", objects.TASK_RUNNING)


def test_an_exit_is_reported_with_its_code(setup):
    worker, executor, rec = setup
    worker.assign([task("a")], full=True)
    rec.state_is("a", objects.TASK_RUNNING)
    executor.controllers["a"].crash(3)
    rec.state_is("a", objects.TASK_FAILED)
    assert rec.latest["a"].err == "task: non-zero exit (3)"


def test_reports_are_batched_and_coalesced(runner):
    executor = SimulatedExecutor(random.Random(1), delays=(0.0, 0.0))
    rec = Recorder()
    worker = Worker(executor, report=rec, runner=runner, flush_interval=0.2)
    worker.assign([task(str(i)) for i in range(20)], full=True)
    rec.until(
        lambda: (
            all(s.state == objects.TASK_RUNNING for s in rec.latest.values())
            and len(rec.latest) == 20
        ),
        "all running",
    )
    # 20 tasks x 4 transitions, but each task appears once per batch, in few batches.
    assert len(rec.batches) <= 3
    assert all(len({tid for tid, _ in b}) == len(b) for b in rec.batches)
    worker.stop()


def test_a_reconnects_full_set_does_not_restart_running_tasks(setup):
    worker, executor, rec = setup
    worker.assign([task("a")], full=True)
    rec.state_is("a", objects.TASK_RUNNING)
    first = executor.controllers["a"]
    stale = task("a")  # the manager's copy still says ASSIGNED
    worker.assign([stale], full=True)
    worker.flush()
    assert executor.controllers["a"] is first and first.exit is None
    assert worker.status("a").state == objects.TASK_RUNNING
    assert rec.states("a").count(objects.TASK_RUNNING) == 1


def test_containers_of_unknown_tasks_are_removed_after_a_restart(runner):
    executor = SimulatedExecutor(random.Random(1), delays=(0.0, 0.0))
    executor.containers |= {"old", "a"}  # left by the previous agent
    rec = Recorder()
    worker = Worker(executor, report=rec, runner=runner, flush_interval=0.01)
    running = task("a")
    running.status.state = objects.TASK_READY
    worker.assign([running], full=True)
    rec.until(lambda: executor.existing() == {"a"}, "orphan removed")
    rec.state_is("a", objects.TASK_RUNNING)
    assert "old" not in worker.statuses()
    worker.stop()


def test_simulated_delays_hold_no_thread(runner):
    """200 tasks with 20-40 ms delays on a 4-thread runner finish in about one delay."""
    executor = SimulatedExecutor(random.Random(5), delays=(0.02, 0.04))
    rec = Recorder()
    worker = Worker(executor, report=rec, runner=runner, flush_interval=0.05)
    worker.assign([task(f"t{i}") for i in range(200)], full=True)
    rec.until(
        lambda: (
            len(rec.latest) == 200
            and all(s.state == objects.TASK_RUNNING for s in rec.latest.values())
        ),
        "200 running",
    )
    worker.stop()

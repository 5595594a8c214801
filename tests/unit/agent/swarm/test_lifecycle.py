"""lifecycle.do: one step per call, table-driven (swarmkit's exec.Do semantics)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from agent.swarm.exec import ExitInfo, Health, Later, RejectedError, TaskError, TemporaryError
from agent.swarm.lifecycle import UNHEALTHY, do
from api import objects_pb2 as objects

pytestmark = pytest.mark.unit

T = objects


@dataclass
class FakeController:
    exit: ExitInfo | None = None
    healthy: Health = Health.NONE
    fail: dict[str, Exception] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            raise self.fail[name]

    def prepare(self) -> None:
        self._call("prepare")

    def start(self) -> None:
        self._call("start")

    def wait(self, *, wake: object) -> ExitInfo | None:
        return self.exit

    def health(self) -> Health:
        return self.healthy

    def shutdown(self) -> None:
        self._call("shutdown")

    def terminate(self) -> None:
        self._call("terminate")

    def remove(self) -> None:
        self._call("remove")

    def close(self) -> None:
        pass


def step(state: int, desired: int, ctl: FakeController) -> objects.TaskStatus:
    task = objects.Task(desired_state=desired)  # type: ignore[arg-type]
    task.meta.id = "t1"
    return do(task, objects.TaskStatus(state=state), ctl)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("state", "desired", "expect", "message", "calls"),
    [
        (T.TASK_ASSIGNED, T.TASK_RUNNING, T.TASK_ACCEPTED, "accepted", []),
        (T.TASK_ACCEPTED, T.TASK_RUNNING, T.TASK_PREPARING, "preparing", []),
        (T.TASK_PREPARING, T.TASK_RUNNING, T.TASK_READY, "prepared", ["prepare"]),
        (T.TASK_READY, T.TASK_RUNNING, T.TASK_STARTING, "starting", []),
        (T.TASK_STARTING, T.TASK_RUNNING, T.TASK_RUNNING, "started", ["start"]),
        (T.TASK_RUNNING, T.TASK_RUNNING, T.TASK_RUNNING, "", []),  # parked: still running
        # desired READY stops at READY until the manager says RUNNING
        (T.TASK_PREPARING, T.TASK_READY, T.TASK_READY, "prepared", ["prepare"]),
        (T.TASK_READY, T.TASK_READY, T.TASK_READY, "", []),
        # shutting down wins, from any non-terminal state
        (T.TASK_ASSIGNED, T.TASK_SHUTDOWN, T.TASK_SHUTDOWN, "shutdown", ["shutdown"]),
        (T.TASK_RUNNING, T.TASK_SHUTDOWN, T.TASK_SHUTDOWN, "shutdown", ["shutdown"]),
        (T.TASK_RUNNING, T.TASK_REMOVE, T.TASK_SHUTDOWN, "shutdown", ["shutdown"]),
        # terminal states are final
        (T.TASK_COMPLETE, T.TASK_SHUTDOWN, T.TASK_COMPLETE, "", []),
        (T.TASK_FAILED, T.TASK_RUNNING, T.TASK_FAILED, "", []),
    ],
)
def test_transitions(state, desired, expect, message, calls):
    ctl = FakeController()
    out = step(state, desired, ctl)
    assert (out.state, out.message, ctl.calls) == (expect, message, calls)


@pytest.mark.parametrize(
    ("desired", "code", "expect", "err"),
    [
        (T.TASK_RUNNING, 0, T.TASK_COMPLETE, ""),
        (T.TASK_RUNNING, 137, T.TASK_FAILED, "task: non-zero exit (137)"),
        (T.TASK_COMPLETE, 0, T.TASK_COMPLETE, ""),  # a job
        (T.TASK_COMPLETE, 1, T.TASK_FAILED, "task: non-zero exit (1)"),
    ],
)
def test_exit(desired, code, expect, err):
    out = step(T.TASK_RUNNING, desired, FakeController(exit=ExitInfo(code)))
    assert (out.state, out.err, out.container.exit_code) == (expect, err, code)


def test_an_exit_before_start_is_reported_not_restarted():
    ctl = FakeController(exit=ExitInfo(2))
    out = step(T.TASK_STARTING, T.TASK_RUNNING, ctl)
    assert out.state == T.TASK_FAILED and ctl.calls == []


@pytest.mark.parametrize(
    ("health", "expect", "healthy"),
    [
        (Health.STARTING, T.TASK_STARTING, False),
        (Health.HEALTHY, T.TASK_RUNNING, True),
        (Health.NONE, T.TASK_RUNNING, True),
    ],
)
def test_running_only_once_healthy(health, expect, healthy):
    out = step(T.TASK_STARTING, T.TASK_RUNNING, FakeController(healthy=health))
    assert (out.state, out.healthy) == (expect, healthy)


@pytest.mark.parametrize("state", [T.TASK_STARTING, T.TASK_RUNNING])
def test_unhealthy_fails_and_stops_the_container(state):
    ctl = FakeController(healthy=Health.UNHEALTHY)
    out = step(state, T.TASK_RUNNING, ctl)
    assert (out.state, out.err, out.healthy) == (T.TASK_FAILED, UNHEALTHY, False)
    assert ctl.calls[-1] == "shutdown"


def test_errors():
    rejected = FakeController(fail={"prepare": RejectedError("No such image: nope")})
    out = step(T.TASK_PREPARING, T.TASK_RUNNING, rejected)
    assert (out.state, out.err) == (T.TASK_REJECTED, "No such image: nope")
    failed = FakeController(fail={"start": TaskError("starting container failed: x")})
    out = step(T.TASK_STARTING, T.TASK_RUNNING, failed)
    assert (out.state, out.err) == (T.TASK_FAILED, "starting container failed: x")


@pytest.mark.parametrize("exc", [Later(0.1), TemporaryError("busy")])
def test_retryable_errors_propagate_to_the_worker(exc):
    with pytest.raises(type(exc)):
        step(T.TASK_PREPARING, T.TASK_RUNNING, FakeController(fail={"prepare": exc}))

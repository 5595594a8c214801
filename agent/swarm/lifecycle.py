"""One step of a task's life: swarmkit's `exec.Do`, as a pure function of three inputs.

`do(task, status, ctl)` looks at what was observed (`status`) and what the manager wants
(`task.desired_state`), calls at most one controller action (prepare, start, shutdown)
besides the non-blocking observations (`wait`, `health`), and returns the next status.
An unchanged status means "nothing to do until something changes": the worker parks
the task until the controller's wake-up or a new assignment.

Invariants: states only move forward; a terminal state is final; desired SHUTDOWN or
beyond wins over everything else; desired READY stops at READY (prepared, not
started) until the manager asks for RUNNING.

    status = do(task, status, ctl)   # ASSIGNED -> ACCEPTED ("accepted")
"""

from __future__ import annotations

import time
from collections.abc import Callable

from api import objects_pb2 as objects
from api.tasks import is_terminal

from .exec import Controller, ExitInfo, Health, RejectedError, TaskError, TemporaryError

UNHEALTHY = "task: unhealthy container"


def _noop() -> None:
    pass


def transition(
    status: objects.TaskStatus,
    state: objects.TaskState.ValueType,
    message: str,
    *,
    err: str = "",
    clock: Callable[[], float] = time.time,
) -> objects.TaskStatus:
    out = objects.TaskStatus()
    out.CopyFrom(status)
    out.state = state
    out.message = message
    out.err = err
    out.timestamp = clock()
    return out


def exit_status(status: objects.TaskStatus, exit: ExitInfo) -> objects.TaskStatus:
    if exit.code == 0 and not exit.error:
        out = transition(status, objects.TASK_COMPLETE, "finished")
    else:
        err = exit.error or f"task: non-zero exit ({exit.code})"
        out = transition(status, objects.TASK_FAILED, "started", err=err)
    out.container.exit_code = exit.code
    return out


def do(
    task: objects.Task,
    status: objects.TaskStatus,
    ctl: Controller,
    *,
    wake: Callable[[], None] = _noop,
) -> objects.TaskStatus:
    """The next status of `task`. Raises only `Later` and `TemporaryError`: the
    worker runs the same step again after a delay."""
    try:
        return _step(task, status, ctl, wake)
    except TemporaryError:
        raise  # the worker tries the same step again later
    except RejectedError as exc:
        return transition(status, objects.TASK_REJECTED, "rejected", err=exc.message)
    except TaskError as exc:
        return transition(status, objects.TASK_FAILED, status.message, err=exc.message)


def _step(
    task: objects.Task, status: objects.TaskStatus, ctl: Controller, wake: Callable[[], None]
) -> objects.TaskStatus:
    state, desired = status.state, task.desired_state
    if is_terminal(state):
        return status
    # Shutting down wins over everything, whatever the task was doing.
    if desired >= objects.TASK_SHUTDOWN:
        ctl.shutdown()
        return transition(status, objects.TASK_SHUTDOWN, "shutdown")
    if desired == objects.TASK_READY and state >= objects.TASK_READY:
        return status  # prepared; the manager will say when to start
    if state < objects.TASK_ACCEPTED:
        return transition(status, objects.TASK_ACCEPTED, "accepted")
    if state == objects.TASK_ACCEPTED:
        return transition(status, objects.TASK_PREPARING, "preparing")
    if state == objects.TASK_PREPARING:
        ctl.prepare()
        return transition(status, objects.TASK_READY, "prepared")
    if state == objects.TASK_READY:
        return transition(status, objects.TASK_STARTING, "starting")
    if state == objects.TASK_STARTING:
        return _starting(status, ctl, wake)
    return _running(status, ctl, wake)


def _starting(
    status: objects.TaskStatus, ctl: Controller, wake: Callable[[], None]
) -> objects.TaskStatus:
    # The exit comes first: `start` is idempotent on a running container but would
    # start an exited one again, and a health check is re-stepped until decided.
    exit = ctl.wait(wake=wake)
    if exit is not None:
        return exit_status(status, exit)
    ctl.start()
    health = ctl.health()
    if health in (Health.NONE, Health.HEALTHY):
        out = transition(status, objects.TASK_RUNNING, "started")
        out.healthy = True
        return out
    if health is Health.UNHEALTHY:
        return _unhealthy(status, ctl)
    return status  # the wait above also wakes the task when its health is decided


def _running(
    status: objects.TaskStatus, ctl: Controller, wake: Callable[[], None]
) -> objects.TaskStatus:
    exit = ctl.wait(wake=wake)
    if exit is not None:
        return exit_status(status, exit)
    if ctl.health() is Health.UNHEALTHY:
        return _unhealthy(status, ctl)
    return status


def _unhealthy(status: objects.TaskStatus, ctl: Controller) -> objects.TaskStatus:
    # As dockerd's swarm executor does: an unhealthy container is stopped, so that its
    # replacement is not fighting it for ports or volumes.
    ctl.shutdown()
    out = transition(status, objects.TASK_FAILED, "unhealthy", err=UNHEALTHY)
    out.healthy = False
    return out

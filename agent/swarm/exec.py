"""What the worker needs from whatever runs tasks: an Executor makes one Controller per task.

The lifecycle (`lifecycle.do`) drives a controller one step at a time and never holds a
thread while a task merely runs, so that one process can drive 100 simulated tasks on
each of 1,000 simulated nodes. That shapes two methods:

- `wait(wake=...)` does not block: it returns the exit if the container has exited,
  else None, and promises one call of `wake()` when that may have changed (an exit, a
  health change). The worker then runs the task's next step.
- A controller that needs time without holding a thread (the simulated executor's
  delays) raises `Later(seconds)` from prepare/start; the worker calls it again then.

Every action is idempotent, so a step repeated after an agent restart adopts what the
previous agent left (an existing container is "prepared", a running one "started").
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from api import objects_pb2 as objects

Wake = Callable[[], None]


class Health(enum.Enum):
    NONE = "none"  # no health check: healthy as soon as it runs
    STARTING = "starting"  # not decided yet
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True)
class ExitInfo:
    code: int
    error: str = ""  # what the engine recorded, e.g. a start that failed


class TaskError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RejectedError(TaskError):
    """The task cannot run here as specified (unknown image, bad mount): REJECTED."""


class TemporaryError(TaskError):
    """Worth retrying the same step later (engine busy, registry unreachable)."""


class Later(Exception):  # a request, not an error
    """Call the same method again after `seconds`; nothing failed."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"again in {seconds:.3f}s")
        self.seconds = seconds


class FileSource(Protocol):
    """The node's copy of the secrets and configs its tasks use (filled by assignments)."""

    def secret(self, secret_id: str) -> objects.Secret | None: ...

    def config(self, config_id: str) -> objects.Config | None: ...


class Controller(Protocol):
    def prepare(self) -> None:
        """Make the task ready to start: image present, container created. Idempotent."""

    def start(self) -> None:
        """Start the prepared container; a running one is left alone."""

    def wait(self, *, wake: Wake) -> ExitInfo | None:
        """The exit if the started container has exited, else None and `wake` later.

        A container that was never started has not exited."""

    def health(self) -> Health: ...

    def shutdown(self) -> None:
        """Stop with the task's stop signal, killing after its grace period."""

    def terminate(self) -> None:
        """Kill now."""

    def remove(self) -> None:
        """Remove the container and everything made for it (files); idempotent."""

    def close(self) -> None:
        """Release watchers; never touches the container (live restore)."""


class Executor(Protocol):
    def controller(self, task: objects.Task, *, files: FileSource) -> Controller: ...

    def existing(self) -> set[str]:
        """Ids of the tasks that have containers here (found again after a restart)."""

"""A simulated executor for scale tests: controllers without containers.

A task walks ACCEPTED → PREPARING → READY → STARTING → RUNNING with a random delay of
`delays` seconds in prepare and in start (drawn from the injected `rng`), then runs
until it is shut down. Delays are requested with `Later`, never slept, so a
controller holds no thread: 100,000 simulated tasks cost 100,000 small objects and
the shared Runner's few threads. `existing()` lists the "containers" that were
prepared and not removed, so orphan clean-up is exercised too.

    executor = SimulatedExecutor(random.Random(7), delays=(0.005, 0.05))
    worker = Worker(executor, report=send, runner=shared_runner)
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

from api import objects_pb2 as objects

from .exec import ExitInfo, FileSource, Health, Later, Wake

EXIT_STOPPED = 143  # what a container stopped by SIGTERM reports


class SimulatedController:
    def __init__(self, executor: SimulatedExecutor, task_id: str) -> None:
        self._executor = executor
        self.task_id = task_id
        self.prepared = self.started = False
        self.exit: ExitInfo | None = None
        self._due: float | None = None
        self._wake: Wake | None = None

    def _delay(self) -> None:
        """Raise Later until this action's random delay has passed."""
        now = self._executor.clock()
        if self._due is None:
            low, high = self._executor.delays
            seconds = self._executor.rng.uniform(low, high) if high > 0 else 0.0
            if seconds <= 0:
                return
            self._due = now + seconds
        if now < self._due:
            raise Later(self._due - now)
        self._due = None

    def prepare(self) -> None:
        if not self.prepared:
            self._delay()
            self.prepared = True
            with self._executor.lock:
                self._executor.containers.add(self.task_id)

    def start(self) -> None:
        if not self.started:
            self._delay()
            self.started = True

    def wait(self, *, wake: Wake) -> ExitInfo | None:
        if self.exit is None:
            self._wake = wake
        return self.exit

    def health(self) -> Health:
        return Health.NONE

    def crash(self, code: int) -> None:
        """For tests: the simulated container exits with `code`."""
        if self.started and self.exit is None:
            self.exit = ExitInfo(code)
            if self._wake is not None:
                self._wake()

    def shutdown(self) -> None:
        if self.started and self.exit is None:
            self.exit = ExitInfo(EXIT_STOPPED)

    def terminate(self) -> None:
        self.shutdown()

    def remove(self) -> None:
        with self._executor.lock:
            self._executor.containers.discard(self.task_id)

    def close(self) -> None:
        self._wake = None


class SimulatedExecutor:
    def __init__(
        self,
        rng: random.Random,
        *,
        delays: tuple[float, float] = (0.005, 0.05),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rng = rng
        self.delays = delays
        self.clock = clock
        self.containers: set[str] = set()
        self.controllers: dict[str, SimulatedController] = {}
        self.lock = threading.Lock()  # the maps are shared by the Runner's threads

    def controller(self, task: objects.Task, *, files: FileSource) -> SimulatedController:
        with self.lock:
            ctl = SimulatedController(self, task.meta.id)
            self.controllers[task.meta.id] = ctl
            return ctl

    def existing(self) -> set[str]:
        with self.lock:
            return set(self.containers)

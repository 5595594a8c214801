"""Health checks of a task's container, with docker's rules.

The check comes from the task's ContainerSpec.healthcheck, else from the image's
HEALTHCHECK (`Healthcheck` in the image config, durations in nanoseconds); a test of
["NONE"] turns it off. Every `interval` the command runs in the container (CMD runs
its argv, CMD-SHELL runs `/bin/sh -c`); a probe slower than `timeout` fails. The
container is HEALTHY after one success and UNHEALTHY after `retries` consecutive
failures; failures within `start_period` of the start do not count, unless a probe
already succeeded.

`HealthTracker` is the pure verdict; `HealthMonitor` runs probes on one thread per
checked container with an injected clock and wait, so unit tests take no real time.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from api import engine_pb2
from api import objects_pb2 as objects
from api.errors import PyswarmError

from .exec import Health

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3
NS = 1e9

Probe = Callable[[Sequence[str], float], bool]  # (argv, timeout) -> passed


@dataclass(frozen=True)
class HealthSettings:
    argv: tuple[str, ...]  # what runs in the container
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    start_period: float = 0.0


def settings(
    spec: objects.HealthConfig, image_check: Mapping[str, Any] | None
) -> HealthSettings | None:
    """The check to run, or None when there is none (or it is turned off)."""
    if spec.test:
        test, interval, timeout = list(spec.test), spec.interval, spec.timeout
        retries, start_period = spec.retries, spec.start_period
    elif image_check and image_check.get("Test"):
        test = list(image_check["Test"])
        interval = image_check.get("Interval", 0) / NS
        timeout = image_check.get("Timeout", 0) / NS
        retries = int(image_check.get("Retries", 0))
        start_period = image_check.get("StartPeriod", 0) / NS
    else:
        return None
    argv = _argv(test)
    if argv is None:
        return None
    return HealthSettings(
        argv=argv,
        interval=interval or DEFAULT_INTERVAL,
        timeout=timeout or DEFAULT_TIMEOUT,
        retries=retries or DEFAULT_RETRIES,
        start_period=start_period,
    )


def _argv(test: Sequence[str]) -> tuple[str, ...] | None:
    kind, rest = test[0].upper(), list(test[1:])
    if kind == "NONE" or not rest:
        return None
    if kind == "CMD":
        return tuple(rest)
    if kind == "CMD-SHELL":
        return ("/bin/sh", "-c", " ".join(rest))
    # docker also accepts a bare command line ("curl -f localhost") from API users.
    return ("/bin/sh", "-c", " ".join(test))


class HealthTracker:
    """The verdict from a sequence of probe results."""

    def __init__(self, check: HealthSettings, *, started_at: float) -> None:
        self.check = check
        self.started_at = started_at
        self.state = Health.STARTING
        self.failures = 0
        self._passed_once = False

    def record(self, passed: bool, *, now: float) -> Health:
        if passed:
            self.failures = 0
            self._passed_once = True
            self.state = Health.HEALTHY
            return self.state
        in_grace = now - self.started_at < self.check.start_period and not self._passed_once
        if not in_grace:
            self.failures += 1
            if self.failures >= self.check.retries:
                self.state = Health.UNHEALTHY
        return self.state


class HealthMonitor:
    """Probes every `interval` on its own thread and calls `on_change` with each new
    verdict, until stopped."""

    def __init__(
        self,
        check: HealthSettings,
        *,
        probe: Probe,
        on_change: Callable[[Health], None],
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        self._stop = threading.Event()
        self._probe = probe
        self._on_change = on_change
        self._clock = clock
        self._wait = wait or self._stop.wait  # True = stop
        self.tracker = HealthTracker(check, started_at=clock())
        self._thread: threading.Thread | None = None

    @property
    def state(self) -> Health:
        return self.tracker.state

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="health", daemon=True)
        self._thread.start()

    def run(self) -> None:
        check = self.tracker.check
        while not self._wait(check.interval) and not self._stop.is_set():
            before = self.tracker.state
            passed = self._probe(check.argv, check.timeout)
            after = self.tracker.record(passed, now=self._clock())
            if after is not before:
                self._on_change(after)

    def stop(self) -> None:
        self._stop.set()


def exec_probe(
    exec: Callable[[engine_pb2.ExecRequest], subprocess.Popen[bytes]], cid: str
) -> Probe:
    """A probe that runs the check with the engine's exec (`ContainerEngine.exec`)."""

    def probe(argv: Sequence[str], timeout: float) -> bool:
        try:
            proc = exec(engine_pb2.ExecRequest(id=cid, cmd=list(argv)))
        except PyswarmError as exc:  # not running any more: the exit decides, not this
            log.debug("health probe of %s: %s", cid[:12], exc.message)
            return False
        try:
            proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return False
        return proc.returncode == 0

    return probe

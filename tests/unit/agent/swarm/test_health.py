"""Health checks: docker's settings and verdicts, on a fake clock."""

from __future__ import annotations

import pytest

from agent.swarm import health
from agent.swarm.exec import Health
from agent.swarm.health import HealthMonitor, HealthSettings, HealthTracker
from api import objects_pb2 as objects

pytestmark = pytest.mark.unit


def test_settings_from_the_spec_with_docker_defaults():
    s = health.settings(objects.HealthConfig(test=["CMD-SHELL", "exit 1"]), None)
    assert s == HealthSettings(argv=("/bin/sh", "-c", "exit 1"), interval=30, timeout=30, retries=3)
    s = health.settings(objects.HealthConfig(test=["CMD", "true"], interval=2, retries=1), None)
    assert s is not None and (s.argv, s.interval, s.retries) == (("true",), 2, 1)


def test_settings_from_the_image_unless_the_spec_says_none():
    image = {"Test": ["CMD", "probe"], "Interval": 5_000_000_000, "StartPeriod": 10**9}
    s = health.settings(objects.HealthConfig(), image)
    assert s is not None and (s.argv, s.interval, s.start_period) == (("probe",), 5.0, 1.0)
    assert health.settings(objects.HealthConfig(test=["NONE"]), image) is None
    assert health.settings(objects.HealthConfig(), {"Test": ["NONE"]}) is None
    assert health.settings(objects.HealthConfig(), None) is None


def test_unhealthy_after_retries_consecutive_failures():
    t = HealthTracker(HealthSettings(argv=("x",), retries=3), started_at=0)
    assert [t.record(False, now=n) for n in (1, 2)] == [Health.STARTING] * 2
    assert t.record(True, now=3) is Health.HEALTHY
    assert [t.record(False, now=n) for n in (4, 5, 6)][-1] is Health.UNHEALTHY


def test_failures_in_the_start_period_do_not_count_until_a_success():
    t = HealthTracker(HealthSettings(argv=("x",), retries=1, start_period=10), started_at=0)
    assert t.record(False, now=5) is Health.STARTING
    assert t.record(False, now=11) is Health.UNHEALTHY
    t = HealthTracker(HealthSettings(argv=("x",), retries=1, start_period=10), started_at=0)
    t.record(True, now=1)
    assert t.record(False, now=2) is Health.UNHEALTHY  # passed once: now it counts


def test_monitor_probes_every_interval_on_a_fake_clock():
    now = [0.0]
    results = iter([False, True, False, False])
    seen: list[Health] = []
    probes: list[tuple[tuple[str, ...], float]] = []

    def wait(seconds: float) -> bool:
        now[0] += seconds
        return now[0] > 4 * 2.0  # stop after four probes

    def probe(argv, timeout):
        probes.append((tuple(argv), timeout))
        return next(results)

    check = HealthSettings(argv=("ok",), interval=2.0, timeout=1.0, retries=2)
    m = HealthMonitor(check, probe=probe, on_change=seen.append, clock=lambda: now[0], wait=wait)
    m.run()
    assert probes == [(("ok",), 1.0)] * 4
    assert seen == [Health.HEALTHY, Health.UNHEALTHY]
    assert m.state is Health.UNHEALTHY

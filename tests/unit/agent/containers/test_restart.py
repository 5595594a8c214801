import pytest

from agent.containers import restart

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("policy", "exit_code", "count", "stopped", "expected"),
    [
        (restart.Policy("no"), 1, 0, False, False),
        (restart.Policy("always"), 0, 5, False, True),
        (restart.Policy("always"), 0, 0, True, False),
        (restart.Policy("unless-stopped"), 3, 0, False, True),
        (restart.Policy("on-failure"), 0, 0, False, False),
        (restart.Policy("on-failure"), 1, 0, False, True),
        (restart.Policy("on-failure", 2), 1, 1, False, True),
        (restart.Policy("on-failure", 2), 1, 2, False, False),
    ],
)
def test_should_restart(policy, exit_code, count, stopped, expected):
    got = restart.should_restart(
        policy, exit_code=exit_code, restart_count=count, manually_stopped=stopped
    )
    assert got is expected


def test_backoff_doubles_caps_and_resets_after_a_long_run():
    delay = restart.backoff(0, ran_for=0)
    assert delay == restart.BACKOFF_START
    for _ in range(20):
        delay = restart.backoff(delay, ran_for=0.01)
    assert delay == restart.BACKOFF_MAX
    assert restart.backoff(delay, ran_for=restart.RESET_AFTER) == restart.BACKOFF_START

"""Restart policies for plain containers, as docker's: a pure decision plus backoff.

Backoff doubles from 100 ms up to one minute between restarts and starts over once
a container has run for 10 s, so a crash loop costs little and a long-lived
container that dies once comes back at once.
"""

from __future__ import annotations

from dataclasses import dataclass

BACKOFF_START = 0.1
BACKOFF_MAX = 60.0
RESET_AFTER = 10.0
POLICIES = ("no", "on-failure", "always", "unless-stopped")


@dataclass(frozen=True)
class Policy:
    name: str = "no"
    max_retries: int = 0


def should_restart(
    policy: Policy, *, exit_code: int, restart_count: int, manually_stopped: bool
) -> bool:
    if manually_stopped or policy.name in ("", "no"):
        return False
    if policy.name == "on-failure":
        if exit_code == 0:
            return False
        return policy.max_retries <= 0 or restart_count < policy.max_retries
    return policy.name in ("always", "unless-stopped")


def backoff(previous: float, *, ran_for: float) -> float:
    """The delay before the next restart, given the last delay and how long it ran."""
    if ran_for >= RESET_AFTER or previous <= 0:
        return BACKOFF_START
    return min(previous * 2, BACKOFF_MAX)

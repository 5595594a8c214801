"""Docker's human-readable units (go-units), shared by the daemon (container STATUS
text is computed there, as dockerd does) and the client (CREATED columns)."""

from __future__ import annotations


def human_duration(seconds: float) -> str:
    """go-units HumanDuration: `Less than a second`, `About a minute`, `3 days`."""
    whole = int(seconds)
    minutes = int(seconds / 60)
    hours = int(seconds / 3600 + 0.5)  # Go's math.Round: halves away from zero
    if whole < 1:
        return "Less than a second"
    if whole == 1:
        return "1 second"
    if whole < 60:
        return f"{whole} seconds"
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"

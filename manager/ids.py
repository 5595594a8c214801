"""Object ids as docker prints them: 25 random base36 characters."""

from __future__ import annotations

import secrets
import string

ALPHABET = string.digits + string.ascii_lowercase


def new_id() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(25))

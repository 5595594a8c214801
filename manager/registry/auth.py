"""HTTP Basic authentication against an htpasswd file of bcrypt entries.

Only bcrypt (`$2y$`, `$2a$`, `$2b$`; Debian's `htpasswd -B`) is accepted, as in docker's
reference registry; other entries are ignored. The `bcrypt` package is used when it is
installed, else the system's libxcrypt (`libcrypt.so.1`, which implements bcrypt)
through ctypes. A bcrypt check costs milliseconds and clients send credentials on
every request, so it runs in a thread and successful checks are remembered by a
sha256 of the credentials (bounded, and only for the lifetime of the process).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ctypes
import hashlib
import hmac
import importlib
from pathlib import Path

_BCRYPT_PREFIXES = ("$2y$", "$2a$", "$2b$")
_CRYPT_DATA_SIZE = 32768  # sizeof(struct crypt_data) in libxcrypt
_CACHE_LIMIT = 1024


def load_htpasswd(path: Path) -> dict[str, str]:
    """user → bcrypt hash, from `user:hash` lines."""
    users: dict[str, str] = {}
    for line in path.read_text().splitlines():
        user, sep, hashed = line.strip().partition(":")
        if sep and user and hashed.startswith(_BCRYPT_PREFIXES):
            users[user] = hashed
    return users


def bcrypt_verify(password: bytes, hashed: str) -> bool:
    try:
        bcrypt = importlib.import_module("bcrypt")
    except ImportError:
        return _libcrypt_verify(password, hashed)
    return bool(bcrypt.checkpw(password, hashed.encode()))


def _libcrypt_verify(password: bytes, hashed: str) -> bool:
    lib = ctypes.CDLL("libcrypt.so.1")
    crypt_rn = lib.crypt_rn
    crypt_rn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
    crypt_rn.restype = ctypes.c_char_p
    data = ctypes.create_string_buffer(_CRYPT_DATA_SIZE)
    result = crypt_rn(password, hashed.encode(), data, _CRYPT_DATA_SIZE)
    return result is not None and hmac.compare_digest(result, hashed.encode())


def parse_basic(header: str | None) -> tuple[str, bytes] | None:
    """(user, password) from an `Authorization: Basic ...` header, else None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    return user.decode(errors="replace"), password


class BasicAuth:
    """Checks Authorization headers against the users of an htpasswd file."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users
        self._verified: set[bytes] = set()

    @classmethod
    def from_file(cls, path: Path) -> BasicAuth:
        return cls(load_htpasswd(path))

    async def check(self, header: str | None) -> bool:
        credentials = parse_basic(header)
        if credentials is None or credentials[0] not in self.users:
            return False
        user, password = credentials
        hashed = self.users[user]
        key = hashlib.sha256(b"\0".join((user.encode(), password, hashed.encode()))).digest()
        if key in self._verified:
            return True
        if not await asyncio.to_thread(bcrypt_verify, password, hashed):
            return False
        if len(self._verified) >= _CACHE_LIMIT:
            self._verified.clear()
        self._verified.add(key)
        return True

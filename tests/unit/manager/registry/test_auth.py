"""Basic auth against an htpasswd file made by Debian's `htpasswd -B`."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest

from manager.registry import auth
from tests.unit.manager.registry.harness import errors, run

HTPASSWD = shutil.which("htpasswd")
pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(HTPASSWD is None, reason="htpasswd (apache2-utils) is not installed"),
]


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    assert HTPASSWD is not None
    path = tmp_path / "htpasswd"
    subprocess.run(
        [HTPASSWD, "-B", "-b", "-c", str(path), "alice", "s3cret"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return path


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_credentials_required_and_checked(tmp_path: Path, htpasswd: Path) -> None:
    async def scenario(client):
        for headers in (
            {},
            basic("alice", "wrong"),
            basic("bob", "s3cret"),
            {"Authorization": "Basic !!"},
        ):
            r = await client.get("/v2/", headers=headers)
            assert r.status == 401
            assert r.headers["WWW-Authenticate"] == 'Basic realm="pyswarm"'
            assert await errors(r) == ["UNAUTHORIZED"]
        for _ in range(2):  # the second check is answered from the cache
            r = await client.get("/v2/", headers=basic("alice", "s3cret"))
            assert r.status == 200

    run(tmp_path / "root", scenario, htpasswd=htpasswd)


def test_libcrypt_verifies_htpasswd_bcrypt(htpasswd: Path) -> None:
    hashed = auth.load_htpasswd(htpasswd)["alice"]
    assert hashed.startswith("$2y$")
    assert auth._libcrypt_verify(b"s3cret", hashed)
    assert not auth._libcrypt_verify(b"s3creT", hashed)


def test_non_bcrypt_entries_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    path.write_text("md5:$apr1$abc$def\nplain:secret\n\nbad line\n")
    assert auth.load_htpasswd(path) == {}
    assert auth.parse_basic("Bearer xyz") is None
    assert auth.parse_basic(None) is None

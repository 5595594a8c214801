"""The client's side of registries: the credentials file (cli.credentials) and the
piped progress output of pull/push (cli.commands.distribution). Kept beside the
registry client's tests, which they pair with."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from api import engine_pb2
from cli import credentials
from cli.commands import distribution

pytestmark = pytest.mark.unit


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "conf"
    monkeypatch.setenv(credentials.ENV, str(directory))
    return directory / "config.json"


def test_store_get_erase_round_trip_with_mode_0600(config: Path) -> None:
    assert credentials.get("127.0.0.1:5000") is None
    credentials.store("127.0.0.1:5000", "alice", "s3:cret")
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    document = json.loads(config.read_text())
    assert document == {
        "auths": {"127.0.0.1:5000": {"auth": base64.b64encode(b"alice:s3:cret").decode()}}
    }
    assert credentials.get("127.0.0.1:5000") == ("alice", "s3:cret")
    credentials.store("docker.io", "bob", "pw")
    assert credentials.erase("127.0.0.1:5000")
    assert not credentials.erase("127.0.0.1:5000")
    assert credentials.get("127.0.0.1:5000") is None
    assert credentials.get("https://index.docker.io/v1/") == ("bob", "pw")
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert [p.name for p in config.parent.iterdir()] == ["config.json"]  # no temp files


def test_other_keys_of_the_file_are_kept(config: Path) -> None:
    config.parent.mkdir()
    config.write_text(json.dumps({"psFormat": "table"}))
    credentials.store("reg.example", "a", "b")
    assert json.loads(config.read_text())["psFormat"] == "table"


@pytest.mark.parametrize(
    ("server", "key"),
    [
        ("", "docker.io"),
        ("https://index.docker.io/v1/", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("http://127.0.0.1:5000/v2/", "127.0.0.1:5000"),
        ("Reg.Example:443", "reg.example:443"),
    ],
)
def test_registry_key(server: str, key: str) -> None:
    assert credentials.registry_key(server) == key


@pytest.mark.parametrize(
    ("image", "registry"),
    [
        ("busybox", "docker.io"),
        ("team/app:1", "docker.io"),
        ("localhost/app", "localhost"),
        ("127.0.0.1:5000/test/busybox:1", "127.0.0.1:5000"),
        ("reg.example/a/b@sha256:" + "a" * 64, "reg.example"),
    ],
)
def test_registry_of(image: str, registry: str) -> None:
    assert credentials.registry_of(image) == registry


def test_piped_progress_is_docker_like() -> None:
    P = engine_pb2.Progress
    messages = [
        P(id="1", status="Pulling from test/app"),
        P(id="abc", status="Pulling fs layer"),
        P(id="abc", status="Downloading", current=10, total=20),
        P(id="abc", status="Download complete"),
        P(id="abc", status="Pull complete"),
        P(status="Digest: sha256:x"),
        P(status="Status: Downloaded newer image for a:1", digest="sha256:x"),
    ]
    assert list(distribution.progress_lines(messages)) == [
        "1: Pulling from test/app",
        "abc: Pulling fs layer",
        "abc: Download complete",
        "abc: Pull complete",
        "Digest: sha256:x",
        "Status: Downloaded newer image for a:1",
    ]


def test_full_reference() -> None:
    assert distribution.full_reference("busybox") == "busybox:latest"
    assert distribution.full_reference("localhost:5000/app") == "localhost:5000/app:latest"
    assert distribution.full_reference("a:1") == "a:1"

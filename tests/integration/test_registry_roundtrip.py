"""Our registry client against our registry server: `pyswarm push`/`pull`/`login` to
`pyswarm registry serve`.

The server runs inside the test daemon's network namespace (`nsenter --net=`) on that
namespace's loopback, so the daemon reaches it at 127.0.0.1 and nothing leaves the
machine; readiness is polled from inside the namespace with a deadline. The CLI runs
outside and talks to the daemon over its unix socket; credentials go to a config dir
in the test's tmp dir. Every server is stopped by its PID with SIGTERM and must exit 0.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest

from tests.daemons import PYSWARM, Daemon, wait_for

HTPASSWD = shutil.which("htpasswd")
CURL = shutil.which("curl")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
    pytest.mark.skipif(CURL is None, reason="curl is not installed"),
]


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    address: str
    log: Path

    def stop(self) -> int:
        """SIGTERM by PID; → the exit code (a clean stop is 0, within 15 s)."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)  # a no-op once it has been reaped
        try:
            code = self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            raise
        assert time.monotonic() - started < 15, "the registry took too long to stop"
        return code


def _status(daemon: Daemon, url: str) -> str:
    """The HTTP status of GET `url` from inside the daemon's namespace ('000' if none)."""
    assert CURL is not None
    res = daemon.in_netns(
        "timeout", "5", CURL, "--noproxy", "*", "-s", "-o", "/dev/null",
        "-w", "%{http_code}", "--max-time", "2", url,
    )  # fmt: skip
    return res.stdout.strip() or "000"


class Servers:
    """Starts `pyswarm registry serve` in a daemon's namespace; stops them all by PID."""

    def __init__(self, daemon: Daemon, tmp_path: Path) -> None:
        self.daemon = daemon
        self.tmp_path = tmp_path
        self.started: list[Server] = []

    def start(self, *, port: int = 5000, htpasswd: Path | None = None) -> Server:
        root = self.tmp_path / f"registry-{port}"
        log = self.tmp_path / f"registry-{port}.log"
        address = f"127.0.0.1:{port}"
        extra = ["--htpasswd", str(htpasswd)] if htpasswd is not None else []
        with open(log, "wb") as out:
            process = subprocess.Popen(
                ["nsenter", f"--net={self.daemon.netns_path}", PYSWARM, "registry", "serve",
                 "--addr", address, "--root", str(root), *extra],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        server = Server(process, address, log)
        self.started.append(server)
        expected = "401" if htpasswd is not None else "200"

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"the registry exited: {log.read_text()[-2000:]}")
            return _status(self.daemon, f"http://{address}/v2/") == expected

        wait_for(ready, timeout=20, what=f"the registry at {address}", interval=0.1)
        return server

    def stop_all(self) -> dict[str, int]:
        codes = {}
        for server in self.started:
            if server.process.returncode is None:
                codes[server.address] = server.stop()
        return codes


@pytest.fixture
def servers(daemon: Daemon, tmp_path: Path) -> Iterator[Servers]:
    made = Servers(daemon, tmp_path)
    try:
        yield made
    finally:
        codes = made.stop_all()
    assert all(code == 0 for code in codes.values()), codes


@pytest.fixture
def client_config(daemon: Daemon, tmp_path: Path) -> Path:
    config = tmp_path / "client-config"
    daemon.env["PYSWARM_CONFIG"] = str(config)
    return config


def image_id(daemon: Daemon, reference: str) -> str:
    res = daemon.cli("image", "inspect", reference, check=True)
    return str(json.loads(res.stdout)[0]["Id"])


def test_push_pull_and_run_through_our_own_registry(
    daemon: Daemon, busybox: str, servers: Servers, client_config: Path, tmp_path: Path
) -> None:
    server = servers.start()
    address = server.address
    name = f"{address}/demo/busybox:1"
    daemon.cli("tag", busybox, name, check=True)
    original = image_id(daemon, name)

    pushed = daemon.cli("push", name, timeout=120, check=True)
    assert f"The push refers to repository [{address}/demo/busybox]" in pushed.stdout
    assert ": Pushed" in pushed.stdout
    assert "Layer already exists" not in pushed.stdout
    digest = pushed.stdout.split("1: digest: ")[1].split()[0]
    assert digest.startswith("sha256:")
    # the server keeps blobs content-addressed on disk, nothing left in uploads
    root = tmp_path / "registry-5000"
    blobs = {p.name for p in (root / "blobs" / "sha256").iterdir()}
    assert digest.removeprefix("sha256:") in blobs
    assert list((root / "uploads").iterdir()) == []

    again = daemon.cli("push", name, timeout=120, check=True)
    assert ": Layer already exists" in again.stdout
    assert ": Pushed" not in again.stdout
    assert f"1: digest: {digest}" in again.stdout  # same manifest bytes

    # a second repository on the same server: the layer is mounted, not uploaded
    elsewhere = f"{address}/other/busybox:1"
    daemon.cli("tag", name, elsewhere, check=True)
    mounted = daemon.cli("push", elsewhere, timeout=120, check=True)
    assert ": Mounted from demo/busybox" in mounted.stdout, mounted.stdout
    daemon.cli("rmi", elsewhere, check=True)

    daemon.cli("rmi", name, busybox, check=True)
    assert daemon.cli("image", "inspect", name).returncode != 0
    pulled = daemon.cli("pull", name, timeout=120, check=True)
    lines = pulled.stdout.splitlines()
    assert lines[0] == "1: Pulling from demo/busybox"
    assert any(line.endswith(": Pull complete") for line in lines)
    assert lines[-2] == f"Digest: {digest}"
    assert lines[-1] == f"Status: Downloaded newer image for {name}"
    assert image_id(daemon, name) == original
    up_to_date = daemon.cli("pull", name, timeout=120, check=True)
    assert up_to_date.stdout.splitlines()[-1] == f"Status: Image is up to date for {name}"

    ran = daemon.cli("run", "--rm", name, "echo", "ok", check=True)
    assert ran.stdout == "ok\n"

    # by digest, after the tag is gone
    daemon.cli("rmi", name, check=True)
    by_digest = f"{address}/demo/busybox@{digest}"
    daemon.cli("pull", by_digest, timeout=120, check=True)
    assert image_id(daemon, by_digest) == original

    assert servers.stop_all() == {address: 0}  # SIGTERM is a clean stop


@pytest.mark.skipif(HTPASSWD is None, reason="htpasswd (apache2-utils) is not installed")
def test_login_then_push_with_htpasswd(
    daemon: Daemon, busybox: str, servers: Servers, client_config: Path, tmp_path: Path
) -> None:
    assert HTPASSWD is not None
    passwords = tmp_path / "htpasswd"
    subprocess.run(
        [HTPASSWD, "-B", "-b", "-c", str(passwords), "alice", "s3cret"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    server = servers.start(port=5001, htpasswd=passwords)
    address = server.address
    name = f"{address}/private/busybox:1"
    daemon.cli("tag", busybox, name, check=True)

    denied = daemon.cli("push", name, timeout=120)
    assert denied.returncode == 1, denied.stdout
    assert "unauthorized" in denied.stderr
    assert not (tmp_path / "registry-5001" / "repositories" / "private").exists()

    wrong = daemon.cli("login", "-u", "alice", "--password-stdin", address, input=b"nope\n")
    assert wrong.returncode == 1
    assert b"unauthorized" in cast(bytes, wrong.stderr)  # input= makes the output bytes
    assert not (client_config / "config.json").exists()

    ok = daemon.cli("login", "-u", "alice", "--password-stdin", address, input=b"s3cret\n")
    assert ok.returncode == 0, ok.stderr
    assert cast(bytes, ok.stdout) == b"Login Succeeded\n"
    config = client_config / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert address in json.loads(config.read_text())["auths"]

    pushed = daemon.cli("push", name, timeout=120, check=True)
    assert ": Pushed" in pushed.stdout
    assert (tmp_path / "registry-5001" / "repositories" / "private" / "busybox").is_dir()
    original = image_id(daemon, name)
    daemon.cli("rmi", name, check=True)
    daemon.cli("pull", name, timeout=120, check=True)
    assert image_id(daemon, name) == original

    assert daemon.cli("logout", address, check=True).stdout == (
        f"Removing login credentials for {address}\n"
    )
    daemon.cli("rmi", name, check=True)
    refused = daemon.cli("pull", name, timeout=120)
    assert refused.returncode == 1
    assert "unauthorized" in refused.stderr

    assert servers.stop_all() == {address: 0}

"""pull, push and login against the reference registry (Debian's docker-registry).

The registry runs inside the test daemon's network namespace (`nsenter --net=`), on
that namespace's loopback, so the daemon reaches it at 127.0.0.1 and nothing leaves
the machine; skopeo runs there too. The CLI runs outside and talks to the daemon over
its unix socket. Credentials go to a config dir in the test's tmp dir.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest

from tests.daemons import Daemon, wait_for

REGISTRY = shutil.which("docker-registry")
SKOPEO = shutil.which("skopeo")
HTPASSWD = shutil.which("htpasswd")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(REGISTRY is None, reason="docker-registry is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
]

Start = Callable[..., str]


@pytest.fixture
def client_config(daemon: Daemon, tmp_path: Path) -> Path:
    config = tmp_path / "client-config"
    daemon.env["PYSWARM_CONFIG"] = str(config)
    return config


@pytest.fixture
def start_registry(daemon: Daemon, tmp_path: Path) -> Iterator[Start]:
    """Start docker-registry in the daemon's namespace; → its 127.0.0.1:PORT."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*, port: int = 5000, htpasswd: Path | None = None) -> str:
        root = tmp_path / f"registry-{port}"
        root.mkdir()
        config = [
            "version: 0.1",
            f"storage: {{filesystem: {{rootdirectory: {root / 'data'}}}}}",
            f"http: {{addr: 127.0.0.1:{port}}}",
        ]
        if htpasswd is not None:
            config.append(f"auth: {{htpasswd: {{realm: basic, path: {htpasswd}}}}}")
        (root / "config.yml").write_text("\n".join(config) + "\n")
        with open(root / "registry.log", "wb") as log:
            procs.append(
                subprocess.Popen(
                    [
                        "nsenter",
                        f"--net={daemon.netns_path}",
                        str(REGISTRY),
                        "serve",
                        str(root / "config.yml"),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        address = f"127.0.0.1:{port}"
        wait_for(lambda: _answers(daemon, address, procs[-1]), timeout=20, what="the registry")
        return address

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


def _answers(daemon: Daemon, address: str, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise AssertionError("docker-registry exited")
    code = daemon.in_netns(
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "2",
        f"http://{address}/v2/",
    ).stdout
    return code in ("200", "401")


def image_id(daemon: Daemon, reference: str) -> str:
    res = daemon.cli("image", "inspect", reference, check=True)
    return str(json.loads(res.stdout)[0]["Id"])


def skopeo(daemon: Daemon, *args: str) -> str:
    res = daemon.in_netns(SKOPEO or "skopeo", "--insecure-policy", *args, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_push_then_pull_back_and_run(
    daemon: Daemon, busybox: str, start_registry: Start, client_config: Path
) -> None:
    address = start_registry()
    name = f"{address}/test/busybox:1"
    daemon.cli("tag", busybox, name, check=True)
    original = image_id(daemon, name)

    pushed = daemon.cli("push", name, check=True)
    assert f"The push refers to repository [{address}/test/busybox]" in pushed.stdout
    assert ": Pushed" in pushed.stdout
    assert "1: digest: sha256:" in pushed.stdout
    again = daemon.cli("push", name, check=True)
    assert ": Layer already exists" in again.stdout
    elsewhere = f"{address}/other/busybox:1"
    daemon.cli("tag", name, elsewhere, check=True)
    mounted = daemon.cli("push", elsewhere, check=True)
    assert ": Mounted from test/busybox" in mounted.stdout
    daemon.cli("rmi", elsewhere, check=True)

    daemon.cli("rmi", name, busybox, check=True)
    pulled = daemon.cli("pull", name, check=True)
    lines = pulled.stdout.splitlines()
    assert lines[0] == "1: Pulling from test/busybox"
    assert any(line.endswith(": Pull complete") for line in lines)
    assert lines[-2].startswith("Digest: sha256:")
    assert lines[-1] == f"Status: Downloaded newer image for {name}"
    assert image_id(daemon, name) == original
    up_to_date = daemon.cli("pull", name, check=True)
    assert up_to_date.stdout.splitlines()[-1] == f"Status: Image is up to date for {name}"

    ran = daemon.cli("run", "--rm", name, "echo", "ok", check=True)
    assert ran.stdout == "ok\n"

    # By digest: pulled untagged, and found again by name@digest.
    digest = lines[-2].removeprefix("Digest: ")
    daemon.cli("rmi", name, check=True)
    by_digest = f"{address}/test/busybox@{digest}"
    daemon.cli("pull", by_digest, check=True)
    ran = daemon.cli("run", "--rm", by_digest, "echo", "by digest", check=True)
    assert ran.stdout == "by digest\n"


def test_pull_of_a_missing_tag_fails_clearly(daemon: Daemon, start_registry: Start) -> None:
    address = start_registry()
    res = daemon.cli("pull", f"{address}/test/busybox:nope")
    assert res.returncode == 1
    assert res.stderr.strip() == (
        f"Error response from daemon: manifest for {address}/test/busybox:nope "
        "not found: manifest unknown: manifest unknown"
    )


def test_unreachable_registry_and_unqualified_names(daemon: Daemon) -> None:
    res = daemon.cli("pull", "127.0.0.1:5999/test/busybox:1")
    assert res.returncode == 1
    assert "registry 127.0.0.1:5999 is unreachable" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = daemon.cli("pull", "busybox")
    assert res.returncode == 1
    assert "remote pulls of unqualified names are turned off" in res.stderr


@pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed")
def test_skopeo_reads_what_we_push_and_we_pull_what_it_pushes(
    daemon: Daemon, busybox: str, start_registry: Start, client_config: Path, tmp_path: Path
) -> None:
    address = start_registry()
    name = f"{address}/test/busybox:1"
    daemon.cli("tag", busybox, name, check=True)
    digest = daemon.cli("push", name, check=True).stdout.split("digest: ")[1].split()[0]
    inspected = json.loads(skopeo(daemon, "inspect", "--tls-verify=false", f"docker://{name}"))
    assert inspected["Digest"] == digest
    assert len(inspected["Layers"]) == 1

    archive = tmp_path / "busybox.tar"
    daemon.cli("save", "-o", str(archive), busybox, check=True)
    theirs = f"{address}/skopeo/busybox:2"
    skopeo(
        daemon, "copy", "--dest-tls-verify=false", f"docker-archive:{archive}", f"docker://{theirs}"
    )
    daemon.cli("pull", theirs, check=True)
    assert daemon.cli("run", "--rm", theirs, "echo", "ok", check=True).stdout == "ok\n"


@pytest.mark.skipif(HTPASSWD is None, reason="htpasswd is not installed")
def test_login_then_push_and_pull_with_basic_auth(
    daemon: Daemon, busybox: str, start_registry: Start, client_config: Path, tmp_path: Path
) -> None:
    htpasswd = tmp_path / "htpasswd"
    entry = subprocess.run(
        [str(HTPASSWD), "-Bbn", "alice", "s3cret"], capture_output=True, text=True, check=True
    )
    htpasswd.write_text(entry.stdout)
    address = start_registry(port=5001, htpasswd=htpasswd)
    name = f"{address}/private/busybox:1"
    daemon.cli("tag", busybox, name, check=True)

    denied = daemon.cli("push", name)
    assert denied.returncode == 1
    assert "unauthorized" in denied.stderr
    wrong = daemon.cli("login", "-u", "alice", "-p", "nope", address)
    assert wrong.returncode == 1
    assert "unauthorized: incorrect username or password" in wrong.stderr
    assert not (client_config / "config.json").exists()

    ok = daemon.cli("login", "-u", "alice", "--password-stdin", address, input=b"s3cret\n")
    assert ok.returncode == 0, ok.stderr
    assert cast(bytes, ok.stdout) == b"Login Succeeded\n"
    config = client_config / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert address in json.loads(config.read_text())["auths"]

    daemon.cli("push", name, check=True)
    daemon.cli("rmi", name, check=True)
    daemon.cli("pull", name, check=True)

    # on-demand pull by run, with the stored credentials
    daemon.cli("rmi", name, check=True)
    ran = daemon.cli("run", "--rm", name, "echo", "ok")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "ok\n"
    assert f"Unable to find image '{name}' locally" in ran.stderr

    assert daemon.cli("logout", address, check=True).stdout == (
        f"Removing login credentials for {address}\n"
    )
    daemon.cli("rmi", name, check=True)
    assert daemon.cli("pull", name).returncode == 1


def test_run_of_a_missing_unqualified_image_without_remote_pulls(daemon: Daemon) -> None:
    res = daemon.cli("run", "--rm", "no-such-image", "true")
    assert res.returncode == 125
    assert res.stderr == "Error response from daemon: No such image: no-such-image\n"


def test_run_pulls_a_missing_image_on_demand(
    daemon: Daemon, busybox: str, start_registry: Start, client_config: Path
) -> None:
    address = start_registry()
    name = f"{address}/test/busybox:1"
    daemon.cli("tag", busybox, name, check=True)
    daemon.cli("push", name, check=True)
    daemon.cli("rmi", name, check=True)
    ran = daemon.cli("run", "--rm", name, "echo", "ok")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "ok\n"
    lines = ran.stderr.splitlines()
    assert lines[0] == f"Unable to find image '{name}' locally"
    assert lines[-1] == f"Status: Downloaded newer image for {name}"
    missing = daemon.cli("run", "--rm", f"{address}/test/busybox:nope", "true")
    assert missing.returncode == 125
    assert missing.stderr.splitlines() == [
        f"Unable to find image '{address}/test/busybox:nope' locally",
        f"Error response from daemon: manifest for {address}/test/busybox:nope not found: "
        "manifest unknown: manifest unknown",
    ]


def test_build_pulls_a_missing_base_image(
    daemon: Daemon, busybox: str, start_registry: Start, tmp_path: Path
) -> None:
    address = start_registry()
    base = f"{address}/base/busybox:1"
    daemon.cli("tag", busybox, base, check=True)
    daemon.cli("push", base, check=True)
    daemon.cli("rmi", base, check=True)
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {base}\nRUN echo built > /built\n")
    res = daemon.cli("build", "-t", "child:1", str(context), timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Pulling from base/busybox" in res.stdout
    assert f"Status: Downloaded newer image for {base}" in res.stdout
    ran = daemon.cli("run", "--rm", "child:1", "cat", "/built", check=True)
    assert ran.stdout == "built\n"
    # An unqualified name with remote pulls off: one clear line, nothing built.
    (context / "Dockerfile").write_text("FROM nosuchbase\nRUN true\n")
    res = daemon.cli("build", str(context), timeout=60)
    assert res.returncode == 1
    assert "remote pulls of unqualified names are turned off" in res.stderr + res.stdout

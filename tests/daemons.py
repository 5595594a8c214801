"""Real daemons for integration tests, each in a network namespace of its own.

A test's daemon runs under `nsenter --net=` in a namespace the fixture creates, so
its pyswarm0 bridge, nftables table and published ports never touch the machine's
own network; its data root and socket live in the test's tmp dir. Teardown removes
every container through the CLI, stops the daemon by its PID, deletes the
namespace, and fails the test if a mount, cgroup or conmon of it is left behind.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from deploy.baseimage import write_busybox_rootfs

T = TypeVar("T")
PYSWARM = str(Path(sys.executable).parent / "pyswarm")
START_TIMEOUT = 30.0


def wait_for(
    predicate: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.02
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Daemon:
    netns: str
    data_root: Path
    sock: Path
    log_path: Path
    runtime: str = "crun"
    metrics_addr: str = ""
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def cgroup_parent(self) -> str:
        return f"/{self.netns}"  # unique per test daemon, so suites can run side by side

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [
                "nsenter", f"--net={self.netns_path}", PYSWARM, "daemon",
                "--data-root", str(self.data_root), "--host", self.host,
                "--runtime", self.runtime, "--metrics-addr", self.metrics_addr,
                "--cgroup-parent", self.cgroup_parent,
                "--bridge-idle-grace", "1",
                # Never reach for a public registry (DESIGN.md, network safety).
                "--default-registry", "",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        wait_for(self._answers, timeout=START_TIMEOUT, what="the daemon's socket")

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited: {self.log_path.read_text()[-2000:]}")
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(str(self.sock))
            return True
        except OSError:
            return False
        finally:
            s.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)
        self.proc = None

    def cli(
        self, *args: str, check: bool = False, input: bytes | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [PYSWARM, "-H", self.host, *args],
            capture_output=True,
            text=input is None,
            input=input,
            timeout=timeout,
            env={**os.environ, **self.env},
        )
        if check and res.returncode != 0:
            raise AssertionError(
                f"pyswarm {' '.join(args)} failed ({res.returncode}): {res.stderr}"
            )
        return res

    def in_netns(self, *cmd: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["nsenter", f"--net={self.netns_path}", *cmd],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip


def container_ids(daemon: Daemon) -> list[str]:
    res = daemon.cli("ps", "-a", "-q", "--no-trunc")
    return res.stdout.split() if res.returncode == 0 else []


def leftovers(daemon: Daemon, ids: list[str]) -> list[str]:
    """What a daemon's containers may leave: mounts under the data root, cgroups,
    conmon processes, named network namespaces, and (in the daemon's own namespace)
    veths, the bridge and the nftables table."""
    tag = hashlib.sha256(str(daemon.data_root.resolve()).encode()).hexdigest()[:6]
    found = [
        f"netns {ns}"
        for ns in (os.listdir("/run/netns") if os.path.isdir("/run/netns") else [])
        if ns.startswith(f"pyswarm-{tag}-")
    ]
    links = daemon.in_netns("ip", "-o", "link").stdout
    found += [f"link {word.rstrip(':')}" for word in links.split() if word.startswith("vps")]
    if "pyswarm0" in links:
        found.append("bridge pyswarm0")
    if "pyswarm" in daemon.in_netns("nft", "list", "tables").stdout:
        found.append("nftables table pyswarm")
    mounts = Path("/proc/self/mountinfo").read_text()
    found += [
        f"mount {line.split()[4]}" for line in mounts.splitlines() if str(daemon.data_root) in line
    ]
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        parent = hierarchy / daemon.cgroup_parent.lstrip("/")
        if parent.is_dir():
            found += [
                f"cgroup {hierarchy.name}{daemon.cgroup_parent}/{child.name[:12]}"
                for child in parent.iterdir()
                if child.is_dir()
            ]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        is_conmon = cmdline.split(b"\0", 1)[0].endswith(b"conmon")
        if is_conmon and str(daemon.data_root).encode() in cmdline:
            found.append(f"conmon pid {proc.name}")
    return found


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("images") / "busybox-rootfs.tar"
    write_busybox_rootfs(out)
    return out


def _make_netns() -> str:
    name = f"pyswarm-it-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    return name


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    made: list[Daemon] = []

    def make(runtime: str = "crun", start: bool = True) -> Daemon:
        n = len(made)
        d = Daemon(
            netns=_make_netns(),
            data_root=tmp_path / f"d{n}" / "data",
            sock=tmp_path / f"d{n}" / "pyswarm.sock",
            log_path=tmp_path / f"d{n}" / "daemon.log",
            runtime=runtime,
        )
        d.sock.parent.mkdir(parents=True, exist_ok=True)
        made.append(d)
        if start:
            d.start()
        return d

    yield make
    problems = []
    for d in made:
        ids = []
        if d.proc is not None:
            ids = container_ids(d)
            if ids:
                d.cli("rm", "-f", "-v", *ids)
            d.stop()
        problems += leftovers(d, ids)
        subprocess.run(["ip", "netns", "delete", d.netns], check=False)
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            parent = hierarchy / d.cgroup_parent.lstrip("/")
            if parent.is_dir() and not any(p.is_dir() for p in parent.iterdir()):
                parent.rmdir()
    assert not problems, f"left behind: {problems}"


@pytest.fixture
def daemon(make_daemon: Callable[..., Daemon]) -> Daemon:
    return make_daemon()


@pytest.fixture
def busybox(daemon: Daemon, busybox_tar: Path) -> str:
    daemon.cli(
        "image", "import", "-c", 'CMD ["sh"]', str(busybox_tar), "busybox:latest", check=True
    )
    return "busybox"

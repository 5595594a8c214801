"""The daemon process: live restore, data-root lock, socket errors, runc."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.daemons import PYSWARM, wait_for

pytestmark = pytest.mark.integration


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def _state(daemon, name):
    return json.loads(daemon.cli("inspect", name, check=True).stdout)[0]["State"]


def test_live_restore_after_sigkill(daemon, busybox):
    daemon.cli(
        "run", "-d", "--name", "keeper", busybox, "sh", "-c", "echo one; sleep 300", check=True
    )
    daemon.cli(
        "run",
        "-d",
        "--name",
        "quitter",
        busybox,
        "sh",
        "-c",
        "read x < /tmp/fifo 2>/dev/null; sleep 300",
        check=True,
    )
    pid = _state(daemon, "keeper")["Pid"]
    quitter_pid = _state(daemon, "quitter")["Pid"]
    wait_for(lambda: daemon.cli("logs", "keeper").stdout == "one\n", timeout=5, what="log")

    daemon.stop(signal.SIGKILL)
    assert _pid_alive(pid), "the container must survive its daemon"
    os.kill(quitter_pid, signal.SIGKILL)  # exits while no daemon is watching
    wait_for(lambda: not _pid_alive(quitter_pid), timeout=5, what="quitter to die")

    daemon.start()
    state = _state(daemon, "keeper")
    assert state["Running"] and state["Pid"] == pid
    assert daemon.cli("logs", "keeper").stdout == "one\n"
    q = _state(daemon, "quitter")
    assert q["Status"] == "exited" and q["ExitCode"] == 137
    daemon.cli("stop", "-t", "1", "keeper", check=True)
    assert not _pid_alive(pid)


def test_second_daemon_on_the_same_data_root_is_refused(daemon):
    res = subprocess.run(
        [PYSWARM, "daemon", "--data-root", str(daemon.data_root), "--host",
         f"unix://{daemon.sock}.2", "--metrics-addr", ""],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert res.returncode == 1
    assert "another pyswarm daemon" in res.stderr and str(daemon.data_root) in res.stderr


def test_client_without_daemon(tmp_path):
    sock = tmp_path / "none.sock"
    res = subprocess.run([PYSWARM, "-H", f"unix://{sock}", "ps"], capture_output=True, text=True)
    assert res.returncode == 1
    assert res.stderr.strip() == (
        f"Cannot connect to the pyswarm daemon at unix://{sock}. Is the daemon running?"
    )


def test_sigterm_is_a_clean_shutdown(daemon):
    daemon.stop(signal.SIGTERM)
    assert not daemon.sock.exists()


def test_runc_is_selectable(make_daemon, busybox_tar):
    d = make_daemon(runtime="runc")
    d.cli("image", "import", "-c", 'CMD ["sh"]', str(busybox_tar), "busybox", check=True)
    res = d.cli("run", "--rm", "busybox", "sh", "-c", "echo via runc")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "via runc\n"
    res = d.cli("run", "--rm", "--network", "none", "busybox", "ip", "-o", "link", "show", "lo")
    assert "UP" in res.stdout, res.stdout  # the runtime brought loopback up
    assert (
        json.loads(d.cli("info", "--format", "json").stdout or "{}").get("DefaultRuntime", "runc")
        == "runc"
    )


@pytest.mark.parametrize("missing", ["crun", "conmon"])
def test_daemon_without_runtime_or_conmon_says_so(tmp_path, missing):
    """A PATH without the program: the daemon refuses to start, in one line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("crun", "conmon", "runc", "stat", "mount", "nft", "ip", "modprobe"):
        found = shutil.which(tool)
        if found and tool != missing:
            (bin_dir / tool).symlink_to(found)
    res = subprocess.run(
        [PYSWARM, "daemon", "--data-root", str(tmp_path / "data"),
         "--host", f"unix://{tmp_path}/s.sock", "--metrics-addr", ""],
        capture_output=True, text=True, timeout=30, env={**os.environ, "PATH": str(bin_dir)},
    )  # fmt: skip
    assert res.returncode == 1
    assert f"{missing} is not installed" in res.stderr
    assert res.stderr.strip().count("\n") == 0, res.stderr
    assert not (tmp_path / "s.sock").exists()


def test_socket_mode_version_info_and_metrics(make_daemon, tmp_path):
    d = make_daemon(start=False)
    d.metrics_addr = "127.0.0.1:9323"  # inside the daemon's own network namespace
    d.start()
    assert oct(d.sock.stat().st_mode & 0o777) == "0o660"
    version = d.cli("version", check=True).stdout
    assert "Server" in version and "crun" in version
    info = d.cli("info", check=True).stdout
    assert str(d.data_root) in info and "Cgroup" in info

    def scrape() -> str:
        res = d.in_netns(
            "timeout", "5", "busybox", "wget", "-q", "-O", "-", "http://127.0.0.1:9323/metrics"
        )
        return res.stdout if res.returncode == 0 else ""

    body = wait_for(scrape, timeout=10, what="metrics")
    assert 'pyswarm_engine_containers{state="running"} 0.0' in body


def test_restore_undoes_a_start_interrupted_by_a_crash(daemon, busybox):
    cid = daemon.cli("create", "--name", "half", busybox, "true", check=True).stdout.strip()
    daemon.stop(signal.SIGKILL)
    # What a crash right after mounting the root filesystem leaves behind.
    rootfs = daemon.data_root / "containers" / cid / "bundle" / "rootfs"
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(rootfs)], check=True)
    daemon.start()
    assert str(rootfs) not in Path("/proc/self/mountinfo").read_text()
    assert _state(daemon, "half")["Status"] == "created"
    res = daemon.cli("start", "half")
    assert res.returncode == 0, res.stderr

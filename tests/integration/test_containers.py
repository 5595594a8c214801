"""Containers on a real daemon: what a user of `pyswarm run/ps/logs/exec/...` sees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.daemons import wait_for

pytestmark = pytest.mark.integration


def test_run_streams_output_and_exits_with_the_containers_code(daemon, busybox):
    res = daemon.cli("run", "--rm", busybox, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert res.returncode == 3
    assert res.stdout == "out\n"
    assert res.stderr == "err\n"
    assert daemon.cli("ps", "-a", "-q").stdout == ""  # --rm removed it


def test_detached_container_lifecycle(daemon, busybox):
    cid = daemon.cli("run", "-d", "--name", "web", busybox, "sh", "-c", "echo ready; sleep 300")
    assert cid.returncode == 0, cid.stderr
    cid = cid.stdout.strip()
    assert len(cid) == 64
    ps = daemon.cli("ps", "--format", "json", check=True).stdout.splitlines()
    row = json.loads(ps[0])
    assert row["Names"] == "web" and row["State"] == "running" and row["ID"] == cid[:12]
    wait_for(lambda: daemon.cli("logs", "web").stdout == "ready\n", timeout=5, what="log line")
    assert daemon.cli("stop", "-t", "1", "web", check=True).stdout.strip() == "web"
    status = json.loads(daemon.cli("inspect", "web", check=True).stdout)[0]["State"]
    assert status["Status"] == "exited" and not status["Running"]
    assert "Exited (" in daemon.cli("ps", "-a", check=True).stdout
    assert daemon.cli("ps", "-q").stdout == ""
    daemon.cli("rm", "web", check=True)
    assert daemon.cli("ps", "-a", "-q").stdout == ""


def test_missing_command_exits_127_and_not_executable_126(daemon, busybox):
    res = daemon.cli("run", "--rm", busybox, "no-such-command")
    assert res.returncode == 127
    assert "executable file not found" in res.stderr and res.stderr.count("\n") == 1
    res = daemon.cli("run", "--rm", busybox, "/etc/passwd")
    assert res.returncode == 126
    assert "permission denied" in res.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no-such-image"], "No such image"),
        (["--memory", "12q", "busybox"], "invalid"),
        (["-v", "bad/name:/data", "busybox", "true"], "invalid"),
        (["-v", "..:/data", "busybox", "true"], "invalid"),
        (
            ["--mount", "type=bind,source=/no/such/dir,target=/x", "busybox", "true"],
            "does not exist",
        ),
        (["--cap-add", "NOT_A_CAP", "busybox", "true"], "capability"),
        (["--restart", "sometimes", "busybox", "true"], "restart"),
    ],
)
def test_bad_input_is_one_line_exit_125_and_leaves_nothing(daemon, busybox, args, message):
    res = daemon.cli("run", "--rm", *args)
    assert res.returncode == 125, res.stderr
    assert message.lower() in res.stderr.lower()
    assert res.stderr.strip().count("\n") == 0, res.stderr
    assert daemon.cli("ps", "-a", "-q").stdout == ""
    assert daemon.cli("volume", "ls", "-q").stdout == ""


def test_name_already_in_use(daemon, busybox):
    daemon.cli("create", "--name", "dup", busybox, "true", check=True)
    res = daemon.cli("run", "--name", "dup", busybox, "true")
    assert res.returncode == 125
    assert 'The container name "/dup" is already in use' in res.stderr


def test_unknown_container_errors_like_docker(daemon):
    res = daemon.cli("logs", "ghost")
    assert res.returncode == 1
    assert res.stderr.strip() == "Error response from daemon: No such container: ghost"


def test_exec_propagates_exit_code_env_and_workdir(daemon, busybox):
    daemon.cli("run", "-d", "--name", "box", busybox, "sleep", "300", check=True)
    res = daemon.cli(
        "exec",
        "-e",
        "GREETING=hi",
        "-w",
        "/tmp",
        "box",
        "sh",
        "-c",
        'echo "$GREETING $(pwd)"; exit 4',
    )
    assert res.returncode == 4
    assert res.stdout == "hi /tmp\n"
    assert daemon.cli("exec", "box", "nope").returncode == 127


def test_limits_are_enforced_by_cgroups(daemon, busybox):
    script = (
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max;"
        "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max"
    )
    res = daemon.cli(
        "run", "--rm", "--memory", "64m", "--pids-limit", "12", busybox, "sh", "-c", script
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [str(64 * 1024 * 1024), "12"]
    # Hitting the pids limit: forks beyond it fail inside the container.
    bomb = "for i in $(seq 30); do sleep 30 & done; echo all started"
    res = daemon.cli("run", "--rm", "--pids-limit", "10", busybox, "sh", "-c", bomb)
    assert "can't fork" in res.stderr, res.stderr
    assert "all started" not in res.stdout


def test_cpus_sets_a_cfs_quota(daemon, busybox):
    script = "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 /sys/fs/cgroup/cpu.max"
    res = daemon.cli("run", "--rm", "--cpus", "0.5", busybox, "sh", "-c", script)
    assert res.stdout.strip() == "50000"


def test_security_defaults(daemon, busybox):
    # Docker's default capability set: 0xa80425fb. NET_ADMIN is not in it.
    res = daemon.cli("run", "--rm", busybox, "sh", "-c", "grep CapEff /proc/self/status")
    assert res.stdout.split()[-1] == "00000000a80425fb"
    res = daemon.cli(
        "run", "--rm", "--cap-add", "NET_ADMIN", busybox, "grep", "CapEff", "/proc/self/status"
    )
    assert res.stdout.split()[-1] == "00000000a80435fb"
    # /proc/timer_list is masked (read as empty); /dev holds only the basic devices.
    assert Path("/proc/timer_list").read_text() != ""
    res = daemon.cli("run", "--rm", busybox, "sh", "-c", "wc -c < /proc/timer_list; ls /dev")
    masked, *devices = res.stdout.split()
    assert masked == "0"
    assert set(devices) <= {
        "core",
        "fd",
        "full",
        "mqueue",
        "null",
        "ptmx",
        "pts",
        "random",
        "shm",
        "stderr",
        "stdin",
        "stdout",
        "tty",
        "urandom",
        "zero",
    }
    res = daemon.cli("run", "--rm", busybox, "sh", "-c", "echo 1 > /proc/sys/kernel/panic")
    assert res.returncode != 0


def test_read_only_root(daemon, busybox):
    assert daemon.cli("run", "--rm", "--read-only", busybox, "touch", "/x").returncode == 1
    res = daemon.cli(
        "run", "--rm", "--read-only", "--tmpfs", "/scratch", busybox, "touch", "/scratch/x"
    )
    assert res.returncode == 0, res.stderr


def test_user_workdir_hostname_env_entrypoint(daemon, busybox):
    res = daemon.cli(
        "run", "--rm", "-u", "nobody", "-w", "/tmp", "-h", "myhost", "-e", "A=1",
        "--entrypoint", "sh", busybox, "-c", 'echo "$(id -u) $(pwd) $(hostname) $A"',
    )  # fmt: skip
    assert res.stdout == "65534 /tmp myhost 1\n", res.stderr


def test_volumes_persist_and_rm_v_removes_anonymous_ones(daemon, busybox, tmp_path):
    daemon.cli(
        "run", "--rm", "-v", "data:/data", busybox, "sh", "-c", "echo kept > /data/f", check=True
    )
    res = daemon.cli("run", "--rm", "-v", "data:/data", busybox, "cat", "/data/f")
    assert res.stdout == "kept\n"
    assert daemon.cli("volume", "ls", "-q").stdout.split() == ["data"]
    res = daemon.cli("volume", "rm", "data")
    assert res.returncode == 0, res.stderr
    host = tmp_path / "bind"
    host.mkdir()
    daemon.cli("run", "--rm", "-v", f"{host}:/b", busybox, "sh", "-c", "echo hi > /b/x", check=True)
    assert (host / "x").read_text() == "hi\n"
    daemon.cli(
        "run", "--name", "anon", "--mount", "type=volume,target=/anon", busybox, "true", check=True
    )
    assert len(daemon.cli("volume", "ls", "-q").stdout.split()) == 1
    daemon.cli("rm", "-v", "anon", check=True)
    assert daemon.cli("volume", "ls", "-q").stdout == ""


def test_restart_policy_on_failure_with_max_retries(daemon, busybox):
    daemon.cli(
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        busybox,
        "sh",
        "-c",
        "echo try; exit 1",
        check=True,
    )

    def settled():
        doc = json.loads(daemon.cli("inspect", "flaky").stdout)[0]
        return doc if doc["State"]["Status"] == "exited" and doc["RestartCount"] == 2 else None

    doc = wait_for(settled, timeout=15, what="two restarts")
    assert doc["State"]["ExitCode"] == 1
    assert daemon.cli("logs", "flaky").stdout == "try\n" * 3


def test_logs_timestamps_tail_and_streams(daemon, busybox):
    daemon.cli(
        "run",
        "--name",
        "talk",
        busybox,
        "sh",
        "-c",
        "for i in 1 2 3; do echo $i; done; echo e >&2",
        check=True,
    )
    res = daemon.cli("logs", "--tail", "2", "talk")
    assert res.stdout == "3\n" and res.stderr == "e\n"
    stamped = daemon.cli("logs", "-t", "talk").stdout.splitlines()
    assert stamped[0].endswith(" 1") and stamped[0][:4].isdigit() and "T" in stamped[0]


def test_stats_no_stream(daemon, busybox):
    daemon.cli("run", "-d", "--name", "st", "--memory", "32m", busybox, "sleep", "300", check=True)
    res = daemon.cli("stats", "--no-stream", "st")
    assert res.returncode == 0, res.stderr
    assert "st" in res.stdout and "32MiB" in res.stdout.replace(" ", "")


def test_container_prune_and_wait(daemon, busybox):
    daemon.cli("run", "--name", "done1", busybox, "sh", "-c", "exit 7", check=False)
    assert daemon.cli("wait", "done1").stdout.strip() == "7"
    res = daemon.cli("container", "prune", "-f")
    assert res.returncode == 0 and "Deleted Containers" in res.stdout
    assert daemon.cli("ps", "-a", "-q").stdout == ""


def test_kill_start_restart(daemon, busybox):
    daemon.cli("run", "-d", "--name", "kk", busybox, "sleep", "300", check=True)
    first_pid = json.loads(daemon.cli("inspect", "kk", check=True).stdout)[0]["State"]["Pid"]
    daemon.cli("kill", "-s", "TERM", "kk", check=True)
    # sleep as pid 1 ignores TERM unless it is handled: docker then needs KILL too.
    state = json.loads(daemon.cli("inspect", "kk", check=True).stdout)[0]["State"]
    if state["Running"]:
        daemon.cli("kill", "kk", check=True)
    assert daemon.cli("wait", "kk", check=True).stdout.strip() in ("137", "143")
    daemon.cli("start", "kk", check=True)
    state = json.loads(daemon.cli("inspect", "kk", check=True).stdout)[0]["State"]
    assert state["Running"] and state["Pid"] != first_pid
    daemon.cli("restart", "-t", "1", "kk", check=True)
    again = json.loads(daemon.cli("inspect", "kk", check=True).stdout)[0]["State"]
    assert again["Running"] and again["Pid"] != state["Pid"]
    res = daemon.cli("kill", "-s", "NOPE", "kk")
    assert res.returncode != 0 and "signal" in res.stderr.lower()


def test_logs_follow_streams_until_exit(daemon, busybox):
    daemon.cli(
        "run", "-d", "--name", "ticker", busybox,
        "sh", "-c", "for i in 1 2 3 4 5; do echo tick $i; sleep 0.2; done",
        check=True,
    )  # fmt: skip
    res = daemon.cli("logs", "-f", "ticker", timeout=20)
    assert res.returncode == 0
    assert res.stdout == "".join(f"tick {i}\n" for i in range(1, 6))


def test_env_file_and_labels(daemon, busybox, tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text("# comment\nFROM_FILE=yes\nSHARED=file\n")
    res = daemon.cli(
        "run", "--rm", "--env-file", str(env_file), "-e", "SHARED=flag", "-l", "team=core",
        busybox, "sh", "-c", 'echo "$FROM_FILE $SHARED"',
    )  # fmt: skip
    assert res.stdout == "yes flag\n", res.stderr
    daemon.cli("create", "--name", "lab", "-l", "team=core", busybox, "true", check=True)
    row = json.loads(daemon.cli("ps", "-a", "--format", "json", check=True).stdout)
    assert "team=core" in row["Labels"]

"""The OCI runtime (crun by default, runc selectable) and conmon, driven as programs.

Start-up order for one container, and why:
1. `conmon` is spawned with a sync pipe and a start pipe. It double-forks (so it
   outlives the daemon: live restore), runs `<runtime> create`, and writes
   `{"data": <pid>}` (or a negative value and a message) to the sync pipe.
2. The daemon runs `<runtime> start <id>`; the container's process execs.
3. When the process exits, conmon writes its exit code to `<exit-dir>/<id>` and
   exits itself; the engine watches conmon's pidfd to learn of it.
conmon holds the container's stdio and writes the log in k8s-file format, so no
Python process sits between a container and its log.

Each daemon keeps the runtime's state under its own `--root`, so several daemons on
one machine never see each other's containers.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api.errors import EngineFailure

RUNTIMES = ("crun", "runc")
RUNTIME_TIMEOUT = 30.0


DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def find_binary(name: str) -> str:
    """The program's path, looked up in the daemon's PATH (the standard one if unset)."""
    search = os.environ.get("PATH") or DEFAULT_PATH
    path = shutil.which(name, path=search)
    if path is None:
        raise EngineFailure(
            f"{name} is not installed (looked in {search}); install it with "
            f"`make install` or `apt-get install {name}`"
        )
    return path


@dataclass(frozen=True)
class Launched:
    pid: int
    conmon_pid: int


@dataclass(frozen=True)
class ContainerPaths:
    """Where conmon and the runtime keep one container's files."""

    bundle: Path
    log: Path
    exit_dir: Path
    pidfile: Path
    conmon_pidfile: Path
    socket_dir: Path


class Runtime:
    def __init__(self, name: str, *, state_root: Path) -> None:
        if name not in RUNTIMES:
            raise EngineFailure(f"unknown runtime {name!r} (choose crun or runc)")
        self.name = name
        self.binary = find_binary(name)
        self.conmon = find_binary("conmon")
        self.state_root = state_root
        state_root.mkdir(parents=True, exist_ok=True)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [self.binary, "--root", str(self.state_root), *args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=RUNTIME_TIMEOUT)
        if check and res.returncode != 0:
            detail = res.stderr.strip().splitlines()[-1:] or [f"exit status {res.returncode}"]
            raise EngineFailure(f"{self.name} {args[0]} failed: {detail[0]}")
        return res

    @functools.cache  # noqa: B019 - one Runtime per daemon; the binary does not change
    def version(self) -> str:
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True)
        first = out.stdout.splitlines()[:1]
        return first[0].split()[-1] if first else "unknown"

    def launch(self, cid: str, paths: ContainerPaths) -> Launched:
        """Have conmon create the container (not yet started); return its pids."""
        sync_r, sync_w = os.pipe()
        start_r, start_w = os.pipe()
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "_OCI_SYNCPIPE": str(sync_w),
            "_OCI_STARTPIPE": str(start_r),
        }
        args = [
            self.conmon,
            "--api-version", "1",
            "-c", cid,
            "-u", cid,
            "-n", cid[:12],
            "-r", self.binary,
            "--runtime-arg", "--root",
            "--runtime-arg", str(self.state_root),
            "-b", str(paths.bundle),
            "-p", str(paths.pidfile),
            "-P", str(paths.conmon_pidfile),
            "-l", f"k8s-file:{paths.log}",
            "--exit-dir", str(paths.exit_dir),
            "--socket-dir-path", str(paths.socket_dir),
            "--log-level", "error",
        ]  # fmt: skip
        try:
            proc = subprocess.Popen(
                args,
                pass_fds=(sync_w, start_r),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            os.close(sync_r)
            raise EngineFailure(f"starting conmon: {exc}") from exc
        finally:
            os.close(sync_w)
            os.close(start_r)
        try:
            os.write(start_w, b"0")
        finally:
            os.close(start_w)
        _, stderr = proc.communicate(timeout=RUNTIME_TIMEOUT)
        with os.fdopen(sync_r, "rb") as sync:
            reply = sync.readline()
        return self._launched(reply, stderr, paths)

    def _launched(self, reply: bytes, stderr: bytes, paths: ContainerPaths) -> Launched:
        try:
            msg: dict[str, Any] = json.loads(reply) if reply else {}
        except json.JSONDecodeError:
            msg = {}
        pid = int(msg.get("data", -1))
        if pid <= 0:
            why = str(msg.get("message") or stderr.decode(errors="replace")).strip()
            raise EngineFailure(f"{self.name} create failed: {why or 'no reply from conmon'}")
        conmon_pid = int(paths.conmon_pidfile.read_text().strip())
        return Launched(pid=pid, conmon_pid=conmon_pid)

    def start(self, cid: str) -> None:
        self._run("start", cid)

    def kill(self, cid: str, signal: str) -> None:
        self._run("kill", cid, signal)

    def delete(self, cid: str) -> None:
        """Remove the runtime's record (and cgroup) of a container; idempotent."""
        res = self._run("delete", "--force", cid, check=False)
        if (
            res.returncode != 0
            and "does not exist" not in res.stderr
            and "not exist" not in (res.stderr)
        ):
            detail = res.stderr.strip().splitlines()[-1:] or ["?"]
            raise EngineFailure(f"{self.name} delete failed: {detail[0]}")

    def state(self, cid: str) -> dict[str, Any] | None:
        res = self._run("state", cid, check=False)
        if res.returncode != 0:
            return None
        state: dict[str, Any] = json.loads(res.stdout)
        return state

    def exec_argv(self, cid: str, process_file: Path) -> list[str]:
        """The command line that runs a process (described by a JSON file) in `cid`."""
        return [
            self.binary,
            "--root",
            str(self.state_root),
            "exec",
            "--process",
            str(process_file),
            cid,
        ]


def is_conmon(pid: int, cid: str) -> bool:
    """Is `pid` still the conmon of this container (pids get reused)?"""
    if pid <= 0:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmdline) and cmdline[0].endswith(b"conmon") and cid.encode() in cmdline

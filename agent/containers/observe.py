"""Looking into containers without changing them: logs, exec and stats.

Pure helpers over a container's files and cgroup; the engine checks the container's
state and passes what they need, so nothing here touches the engine's locks.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from api import engine_pb2

from . import cgroups, logs, prepare
from .record import ContainerRecord
from .runtime import Runtime


def read(
    path: Path,
    request: engine_pb2.LogsRequest,
    *,
    is_running: Callable[[], bool],
    sleep: Callable[[float], None],
) -> Iterator[logs.LogRecord]:
    """The container's log as `logs` asks: all streams unless one is chosen."""
    want_out = request.stdout or not request.stderr
    want_err = request.stderr or not request.stdout
    if not request.follow:
        yield from logs.read_logs(
            path, tail=request.tail, since=request.since, stdout=want_out, stderr=want_err
        )
        return
    yield from logs.follow_logs(
        path,
        tail=request.tail,
        since=request.since,
        stdout=want_out,
        stderr=want_err,
        is_running=is_running,
        sleep=sleep,
    )


def start_exec(
    runtime: Runtime,
    record: ContainerRecord,
    request: engine_pb2.ExecRequest,
    *,
    root: Path,
    image_cfg: dict[str, Any],
    exec_dir: Path,
) -> subprocess.Popen[bytes]:
    """Run a process in a running container; the caller streams its pipes."""
    process = prepare.exec_process(record, request, root=root, image_cfg=image_cfg)
    process_file = exec_dir / f"{secrets.token_hex(8)}.json"
    process_file.write_text(json.dumps(process))
    # The process file stays until the container stops (teardown empties exec/):
    # the runtime may read it after Popen has returned.
    return subprocess.Popen(
        runtime.exec_argv(record.id, process_file),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def stats(record: ContainerRecord, cgroup_path: str, *, interval: float) -> engine_pb2.Stats:
    """Two cgroup readings `interval` apart: CPU % between them, the rest from the last."""
    out = engine_pb2.Stats(id=record.id, name=record.name)
    try:
        first = cgroups.read_stats(cgroup_path)
        time.sleep(interval)
        second = cgroups.read_stats(cgroup_path)
    except FileNotFoundError:
        return out  # it exited between the caller's state check and the read
    out.cpu_percent = cgroups.cpu_percent(first, second, os.cpu_count() or 1)
    out.memory_usage = second.memory_usage
    out.memory_limit = second.memory_limit
    out.pids = second.pids
    return out

"""A task's log for the agent's log broker: its container's log, found by task label.

for stream, timestamp, line in task_logs(engine, task_id, follow=True, tail=-1,
                                         since=0, stop=cancelled):
    publish(...)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from api import engine_pb2
from api.errors import NotFound
from api.tasks import LABEL_TASK_ID

from ..engine import Engine


def container_of(engine: Engine, task_id: str) -> str:
    """The id of the task's container (the newest, if a restart left two)."""
    for record in engine.containers.records(all=True):  # newest first
        if record.config.get("labels", {}).get(LABEL_TASK_ID) == task_id:
            return record.id
    raise NotFound(f"task {task_id} has no container on this node")


def task_logs(
    engine: Engine,
    task_id: str,
    *,
    follow: bool,
    tail: int = -1,
    since: float = 0.0,
    stop: threading.Event,
) -> Iterator[tuple[str, float, bytes]]:
    """(stream, unix seconds, line) for each line; ends at `stop`, at the container's
    exit when following, or at the end of the log."""
    request = engine_pb2.LogsRequest(
        id=container_of(engine, task_id), follow=follow, tail=tail, since=since
    )
    for record in engine.containers.logs(request, cancelled=stop.is_set):
        if stop.is_set():
            return
        yield record.stream, record.time_ns / 1e9, record.data

"""Task status from agents, batched into store writes.

Agents report status changes (ACCEPTED … RUNNING, exits) through the dispatcher; each
report is queued here and returns at once. A flusher writes what is queued every
FLUSH_PERIOD in one `store.batch` (one proposal per 1,000 tasks): at thousands of
reports a second one Raft round per report would be the bottleneck, while 50 ms of
delay is invisible to a user (trade-off: a report is lost if the leader dies before
the flush; the agent re-sends its statuses on its next session).

Only forward moves are written: a report whose state is behind the stored one (an old
message overtaken by a newer one) is dropped, and so is one from a node the task is
no longer assigned to.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Final

from api import objects_pb2 as objects
from api.errors import PyswarmError
from manager import store as st
from manager.loop import StageThread

log = logging.getLogger(__name__)
FLUSH_PERIOD: Final = 0.05


class StatusBatcher(StageThread):
    thread_name = "task-status"

    def __init__(self, store: st.MemoryStore) -> None:
        super().__init__()
        self.store = store
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[str, objects.TaskStatus]] = {}

    def stop(self) -> None:
        super().stop()
        with self._lock:
            self._pending.clear()

    def report(self, node_id: str, updates: list[tuple[str, objects.TaskStatus]]) -> None:
        with self._lock:
            for task_id, status in updates:
                self._pending[task_id] = (node_id, status)  # the newest wins

    def run(self) -> None:
        while not self.stopping.wait(FLUSH_PERIOD):
            with self._lock:
                pending, self._pending = self._pending, {}
            if pending:
                self._flush(pending)

    def _flush(self, pending: dict[str, tuple[str, objects.TaskStatus]]) -> None:
        def write(batch: st.Batch) -> None:
            for task_id, (node_id, status) in pending.items():
                batch.update(
                    functools.partial(
                        _write_status, task_id=task_id, node_id=node_id, status=status
                    )
                )

        try:
            self.store.batch(write, max_actions=1000)
        except PyswarmError as exc:
            # Lost only if leadership is lost too; agents re-send on their next session.
            log.info("task status not written: %s", exc)


def _write_status(tx: st.Tx, *, task_id: str, node_id: str, status: objects.TaskStatus) -> None:
    task = st.get_task(tx, task_id)
    if task is None or task.node_id != node_id:
        return
    if status.state < task.status.state or task.status == status:
        return
    task.status.CopyFrom(status)
    st.update_task(tx, task)

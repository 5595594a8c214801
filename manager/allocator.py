"""The allocator: the pipeline stage between the orchestrators and the scheduler.

It takes tasks in NEW and moves them to PENDING once what they need from the cluster is
allocated. Published ports are allocated with the service (manager.servicecontrol),
and overlay IPs come with the networks (issue 6), so for now a NEW task is allocated
as soon as it is seen. It is its own stage, leader-only, so that the scheduler only
ever sees tasks whose resources exist.

Writes go in batches (the store proposes every 200 writes): one proposal per 200
tasks, never one per task. Level-triggered: on start and after a Reset or a watch
overflow it re-lists the NEW tasks, so a leader change loses nothing.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

from api import objects_pb2 as objects
from api.errors import PyswarmError
from manager import store as st
from manager.loop import StageThread

log = logging.getLogger(__name__)


class Allocator(StageThread):
    thread_name = "allocator"

    def __init__(self, store: st.MemoryStore, *, wall: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.store = store
        self.wall = wall

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self._follow()
            except Exception:  # never die: re-list after a pause
                log.exception("allocator failed; starting over")
                self.stopping.wait(0.5)

    def _follow(self) -> None:
        new, watch = self.store.view_and_watch(
            lambda tx: [t.meta.id for t in st.find_tasks(tx, by=st.ByTaskState(objects.TASK_NEW))],
            kinds={"task"},
            maxsize=1_000_000,
            copies=False,  # read-only
        )
        pending = set(new)
        try:
            while not self.stopping.is_set():
                if pending:
                    self._allocate(pending)
                    pending = set()
                item = watch.get(timeout=0.2)
                while item is not None:
                    if isinstance(item, st.Reset):
                        return
                    if isinstance(item, st.Event) and item.action != st.EventAction.REMOVE:
                        task = item.obj
                        assert isinstance(task, objects.Task)
                        if task.status.state == objects.TASK_NEW:
                            pending.add(task.meta.id)
                    if isinstance(item, st.Commit) and len(pending) >= 1000:
                        break  # a burst: allocate what is there, then read on
                    item = watch.get(timeout=0)
        except st.WatchClosed:
            return  # overflowed: re-list
        finally:
            watch.close()

    def _allocate(self, task_ids: set[str]) -> None:
        now = self.wall()

        def allocate(batch: st.Batch) -> None:
            for task_id in sorted(task_ids):
                batch.update(functools.partial(_allocate_one, task_id=task_id, now=now))

        try:
            self.store.batch(allocate, max_actions=1000)
        except PyswarmError as exc:
            log.info("allocation interrupted (%s); retrying from the store", exc)
            raise


def _allocate_one(tx: st.Tx, *, task_id: str, now: float) -> None:
    task = st.get_task(tx, task_id)
    if task is None or task.status.state != objects.TASK_NEW:
        return
    task.status.state = objects.TASK_PENDING
    task.status.message = "pending task scheduling"
    task.status.timestamp = now
    st.update_task(tx, task)

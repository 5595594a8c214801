"""The `Orchestrator` the manager runs while it leads: watch, mark dirty, reconcile.

Two daemon threads, started by `start()` and joined by `stop()`:

- the *watcher* lists every service (and the services of all tasks, so that tasks of
  deleted services are found) with `view_and_watch`, then follows the watch: an event
  marks the service it concerns dirty, a Commit marker wakes the worker. A Reset, or a
  watch closed because it fell behind, makes it list everything again. It does nothing
  else, so it keeps up while the worker is busy with a large service.
- the *worker* reconciles the dirty services one at a time (one sequential worker per
  service, trivially) and runs the timers (restart delays, update delays and monitor
  periods) at least every 100 ms.

A task event only marks its own service, and only when it matters to the orchestrator
(created, removed, desired state changed, running or ended): the allocator's and the
scheduler's writes, and the agent's progress before RUNNING, are ignored, so 100,000
tasks going through the pipeline do not re-reconcile their service once per batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from api import objects_pb2 as objects
from api.errors import PyswarmError, SequenceConflict
from manager import store as st
from manager.orchestrator.service import ServiceMemory, reconcile_service

log = logging.getLogger(__name__)

KINDS = frozenset({"service", "task", "node", "cluster"})
TICK = 0.1  # seconds: how late a restart delay or update timer may fire at most
RETRY = 1.0  # seconds before a service whose pass failed is tried again
WATCH_BUFFER = 1_000_000  # events: 100,000 tasks created and assigned must not overflow it


class Orchestrator:
    """Replicated, global and job services, restarts, rolling updates and the reaper.

    Usage (the manager, on leadership)::

        orch = Orchestrator(store)
        orch.start()
        ...
        orch.stop()   # on leadership loss; idempotent

    Tests drive it without threads: `reconcile_all()`, then `tick()` as the injected
    clock moves.
    """

    def __init__(
        self,
        store: st.MemoryStore,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._clock = clock
        self._wall = wall
        self._memory: dict[str, ServiceMemory] = {}
        self._wake: dict[str, float] = {}  # service id -> when its timer is due
        self._work = threading.RLock()  # one pass at a time (worker thread or a test)
        self._mu = threading.Lock()  # guards the fields below, shared with the watcher
        self._dirty: set[str] = set()
        self._nodes_changed: set[str] = set()
        self._known: set[str] = set()
        self._watch: st.Watch | None = None
        self._kick = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            return
        self._stopping.clear()
        self._threads = [
            threading.Thread(target=self._watch_loop, name="orchestrator-watch", daemon=True),
            threading.Thread(target=self._work_loop, name="orchestrator", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._kick.set()
        with self._mu:
            if self._watch is not None:
                self._watch.close()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()
        self._threads = []

    # ---- driving it (the worker thread, or a test) -------------------------------------------

    def reconcile_all(self) -> None:
        """List everything and reconcile every service now."""
        self._mark(self._store.view(_service_ids))
        self.tick()

    def tick(self, now: float | None = None) -> None:
        """Reconcile the dirty services and those whose timer is due at `now`."""
        with self._work:
            now = self._clock() if now is None else now
            self._expand_node_changes()
            with self._mu:
                todo = self._dirty
                self._dirty = set()
            todo |= {sid for sid, at in self._wake.items() if at <= now}
            for service_id in sorted(todo):
                self._reconcile(service_id, now)

    def _reconcile(self, service_id: str, now: float) -> None:
        memory = self._memory.setdefault(service_id, ServiceMemory())
        self._wake.pop(service_id, None)
        wake: float | None = None
        try:
            outcome = reconcile_service(self._store, memory, service_id, now=now, wall=self._wall())
        except SequenceConflict:
            wake = now  # a concurrent write: the next tick sees it
        except PyswarmError as exc:  # Unavailable (no quorum) above all: try again later
            log.warning("orchestrator: service %s: %s; retrying", service_id, exc)
            wake = now + RETRY
        except Exception:
            log.exception("orchestrator: reconciling service %s failed; retrying", service_id)
            wake = now + RETRY
        else:
            wake = outcome.wake
            if outcome.gone:
                self._memory.pop(service_id, None)
                with self._mu:
                    self._known.discard(service_id)
        if wake is not None:
            self._wake[service_id] = wake

    # ---- threads ------------------------------------------------------------------------

    def _work_loop(self) -> None:
        while not self._stopping.is_set():
            self._kick.wait(TICK)
            self._kick.clear()
            if self._stopping.is_set():
                return
            try:
                self.tick()
            except Exception:  # never let the thread die: log, back off, go on
                log.exception("orchestrator pass failed")
                self._stopping.wait(RETRY)

    def _watch_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                # copies=False: the watcher only reads events to mark services dirty
                ids, watch = self._store.view_and_watch(
                    _service_ids, kinds=KINDS, maxsize=WATCH_BUFFER, copies=False
                )
            except Exception:
                log.exception("orchestrator: cannot list the store; retrying")
                self._stopping.wait(RETRY)
                continue
            with self._mu:
                self._watch = watch
            if self._stopping.is_set():
                watch.close()
                return
            self._mark(ids)
            self._follow(watch)
            watch.close()

    def _follow(self, watch: st.Watch) -> None:
        for item in watch:  # ends when the watch is closed (stop, or overflow)
            if isinstance(item, st.Event):
                self._on_event(item)
            elif isinstance(item, st.Commit):
                self._kick.set()
            else:  # Reset: everything may have changed
                return

    def _on_event(self, event: st.Event) -> None:
        obj = event.obj
        if isinstance(obj, objects.Service):
            self._mark({obj.meta.id})
        elif isinstance(obj, objects.Task):
            # Tasks without a service are network attachments of standalone containers.
            if obj.service_id and _task_matters(event, updating=self._updating(obj.service_id)):
                self._mark({obj.service_id})
        elif isinstance(obj, objects.Node):
            if _node_matters(event):
                with self._mu:
                    self._nodes_changed.add(obj.meta.id)
        elif isinstance(obj, objects.Cluster):  # the history limit may have changed
            with self._mu:
                self._dirty |= self._known

    def _updating(self, service_id: str) -> bool:
        """Whether the service has an update in progress. Read from the watcher thread
        without the worker's lock: a stale answer costs one pass (or one pass late,
        caught by the updater's own timer), never a wrong decision."""
        memory = self._memory.get(service_id)
        updater = memory.updater if memory is not None else None
        return updater is not None and not updater.completed

    def _mark(self, service_ids: set[str]) -> None:
        with self._mu:
            self._dirty |= service_ids
            self._known |= service_ids
        self._kick.set()

    def _expand_node_changes(self) -> None:
        """A node changed: its global services and the services of its tasks are dirty."""
        with self._mu:
            changed, self._nodes_changed = self._nodes_changed, set()
        if changed:
            self._mark(self._store.view(lambda tx: _affected_by_nodes(tx, changed)))


def _service_ids(tx: st.ReadTx) -> set[str]:
    ids = {s.meta.id for s in st.find_services(tx)}
    return ids | {t.service_id for t in st.find_tasks(tx, copy=False) if t.service_id}


def _affected_by_nodes(tx: st.ReadTx, node_ids: set[str]) -> set[str]:
    ids = {
        s.meta.id
        for s in st.find_services(tx)
        if s.spec.mode in (objects.GLOBAL, objects.GLOBAL_JOB)
    }
    for node_id in node_ids:
        ids |= {
            t.service_id
            for t in st.find_tasks(tx, by=st.ByNode(node_id), copy=False)
            if t.service_id
        }
    return ids


def _task_matters(event: st.Event, *, updating: bool) -> bool:
    """Whether a task event needs its service reconciled. Reaching RUNNING matters only
    to an update in progress (start-first, monitoring): otherwise 100,000 tasks coming
    up would re-read their service's 100,000 tasks once per status batch."""
    old, new = event.old, event.obj
    if not isinstance(old, objects.Task) or not isinstance(new, objects.Task):
        return True  # created or removed
    if old.desired_state != new.desired_state:
        return True
    if old.status.state == new.status.state:
        return False
    if new.status.state == objects.TASK_RUNNING:
        return updating
    return new.status.state > objects.TASK_RUNNING


def _node_matters(event: st.Event) -> bool:
    old, new = event.old, event.obj
    if not isinstance(old, objects.Node) or not isinstance(new, objects.Node):
        return True
    return (
        old.spec != new.spec
        or old.status.state != new.status.state
        or old.status.addr != new.status.addr
        or old.role != new.role
        or old.description != new.description
    )

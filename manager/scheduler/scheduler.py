"""The scheduler's loop on the leader: keep a picture of the nodes, plan, commit.

One daemon thread. It lists nodes and tasks with `view_and_watch`, then follows the
watch: task and node events keep the NodeInfos and the set of PENDING tasks current
(`SchedulerState`); a Reset or a closed watch (overflow) means re-listing from scratch.
When new tasks are pending it waits for a quiet gap, plans them with `plan` and commits
the plan in `store.batch`, where each assignment is re-checked against the latest task
(still PENDING, same version) — the plan is a proposal, the store has the last word.

The NodeInfos follow only the store's events, never the plan: our own assignments come
back as events before the next plan is made (the tick first drains the watch), so the
picture is always the store's, and applying an event twice changes nothing.

Tasks no node can take keep their PENDING state with `status.err` saying why; they are
planned again whenever capacity may have appeared: a node added or changed, or a task
leaving a node.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from functools import partial

from api import objects_pb2 as objects
from api.errors import PyswarmError, SequenceConflict
from manager import store as st
from manager.scheduler.planner import Plan, plan
from manager.scheduler.state import SchedulerState

log = logging.getLogger(__name__)

# Debounce: a service create or scale-up arrives as many small store batches (the
# orchestrator writes ~200 tasks per proposal, the allocator follows). Planning each
# batch alone would cost one plan and one proposal per batch and place batches without
# seeing their siblings; waiting for a QUIET gap lets the whole burst be planned as one
# group. The CAP bounds the latency a steady trickle of new tasks could otherwise add.
QUIET: float = 0.05
CAP: float = 1.0
RETRY: float = 0.5  # after a failed commit or a store error: not a hot loop
IDLE: float = 1.0  # watch wait when nothing is due; stop() closes the watch anyway


class Scheduler:
    """Assigns PENDING tasks to nodes; runs on the leader only.

    Usage::

        scheduler = Scheduler(store)
        scheduler.start()
        ...
        scheduler.stop()  # on leadership loss; idempotent
    """

    def __init__(
        self,
        store: st.MemoryStore,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._wall = wall
        self._rng = rng or random.Random()
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # guards _watch and _thread
        self._watch: st.Watch | None = None
        self._thread: threading.Thread | None = None
        self._state: SchedulerState | None = None  # only the scheduler thread uses it
        self.last_plan: Plan | None = None  # for tests and debugging

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self._stopping.set()
            if self._watch is not None:
                self._watch.close()  # wakes the thread out of watch.get()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    # ---- the loop -----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._session()
            except Exception:
                # Never die on the leader: log, wait a little, and re-list from scratch.
                log.exception("scheduler failed; re-listing")
                self._stopping.wait(RETRY)

    def _session(self) -> None:
        """From one listing until the watch is reset or closed."""
        # The watch hands out the store's own objects (no copy per event at 100,000 tasks):
        # the scheduler only reads them; its writes re-read the task in a transaction.
        state, watch = self._store.view_and_watch(
            SchedulerState.listing, kinds={"node", "task"}, maxsize=1_000_000, copies=False
        )
        if self._state is not None:
            state.inherit_failures(self._state)
        self._state = state
        with self._lock:
            if self._stopping.is_set():
                watch.close()
                return
            self._watch = watch
        try:
            self._follow(state, watch)
        except st.WatchClosed:
            if not self._stopping.is_set():
                log.info("scheduler watch closed (overflowed=%s); re-listing", watch.overflowed)
        finally:
            watch.close()

    def _follow(self, state: SchedulerState, watch: st.Watch) -> None:
        debounce = _Debounce(self._clock)
        if state.wants_plan:
            debounce.poke()
        while not self._stopping.is_set():
            item = watch.get(timeout=debounce.remaining())
            if isinstance(item, st.Reset):
                return
            if isinstance(item, st.Event) and self._apply(state, item):
                debounce.poke()
            # Checked after every item, not only on a quiet watch: agents' status updates
            # may never leave the watch quiet, and the cap must hold regardless.
            if debounce.due():
                self._drain(state, watch)
                if self._tick(state):
                    debounce.clear()
                else:
                    debounce.defer(RETRY)

    def _apply(self, state: SchedulerState, event: st.Event) -> bool:
        """Apply one event; whether it calls for a plan."""
        if event.kind == "task":
            return state.apply_task(event, now=self._clock())
        return state.apply_node(event)

    def _drain(self, state: SchedulerState, watch: st.Watch) -> None:
        """Apply what is already queued (our own last commit, at least), so that the
        plan is made on the store's latest picture; a Reset raises to re-list."""
        while (item := watch.get(timeout=0)) is not None:
            if isinstance(item, st.Reset):
                raise st.WatchClosed("reset")
            if isinstance(item, st.Event):
                self._apply(state, item)

    def _tick(self, state: SchedulerState) -> bool:
        """Plan and commit what is due; False if it must be tried again soon."""
        tasks = state.take_due()
        if not tasks:
            return True
        result = plan(state.nodes, tasks, rng=self._rng, now=self._clock())
        self.last_plan = result
        expected = {t.meta.id: t.meta.version for t in tasks}
        try:
            self._store.batch(lambda batch: self._commit(batch, result, expected))
        except SequenceConflict:
            # A proposal raced another writer; what it held is still PENDING and will be
            # planned again (with everything else) shortly.
            log.info("scheduler commit raced another write; planning again")
        except PyswarmError as e:  # Unavailable (leadership lost, Raft stalled), ...
            log.warning("scheduler commit failed: %s; retrying", e.message)
        else:
            return True
        state.retry_all()
        return False

    def _commit(self, batch: st.Batch, result: Plan, expected: dict[str, int]) -> None:
        wall = self._wall()
        for task_id, node_id in result.assignments.items():
            version = expected[task_id]
            batch.update(
                partial(_assign, task_id=task_id, node_id=node_id, version=version, wall=wall)
            )
        for task_id, reason in result.unschedulable.items():
            version = expected[task_id]
            batch.update(partial(_explain, task_id=task_id, reason=reason, version=version))


class _Debounce:
    """When to plan: QUIET after the last poke, at most CAP after the first."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._first: float | None = None
        self._at: float | None = None

    def poke(self) -> None:
        now = self._clock()
        if self._first is None:
            self._first = now
        self._at = min(now + QUIET, self._first + CAP)

    def defer(self, delay: float) -> None:
        self._first = self._at = self._clock() + delay

    def clear(self) -> None:
        self._first = self._at = None

    def remaining(self) -> float:
        """How long the watch may block: until due, or IDLE if nothing is."""
        return IDLE if self._at is None else max(self._at - self._clock(), 0.0)

    def due(self) -> bool:
        return self._at is not None and self._clock() >= self._at


def _current(tx: st.Tx, task_id: str, version: int) -> objects.Task | None:
    """The task if it is still as it was planned: PENDING, at the version planned."""
    task = st.get_task(tx, task_id)
    if task is None or task.meta.version != version:
        return None
    if task.status.state != objects.TASK_PENDING or task.desired_state > objects.TASK_RUNNING:
        return None
    return task


def _assign(tx: st.Tx, *, task_id: str, node_id: str, version: int, wall: float) -> None:
    task = _current(tx, task_id, version)
    if task is None or st.get_node(tx, node_id) is None:
        return  # changed since the plan; its next event brings it back if still pending
    task.node_id = node_id
    task.status.state = objects.TASK_ASSIGNED
    task.status.message = "assigned"
    task.status.err = ""
    task.status.timestamp = wall
    st.update_task(tx, task)


def _explain(tx: st.Tx, *, task_id: str, reason: str, version: int) -> None:
    task = _current(tx, task_id, version)
    # Only a changed reason is written: the write comes back as an event, and an
    # unconditional one would make every plan cause another.
    if task is not None and task.status.err != reason:
        task.status.err = reason
        st.update_task(tx, task)

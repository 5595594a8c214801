"""The agent's task worker: applies assignments and drives each task's lifecycle.

Design. A task is a small record (latest task, observed status, controller) and is
driven by `lifecycle.do`, one step at a time, on a shared `Runner`: a small thread pool
plus one timer thread. A task is never stepped by two threads at once (its `busy` flag
is the sequential worker per task), while different tasks step in parallel. A step
that makes no progress parks the task without holding a thread; it is stepped again
when something may have changed: a new assignment, the controller's `wake` (an exit,
a health verdict), or a timer (`Later`, `TemporaryError`). So a thread is held only
while an action runs (a pull, a create, a stop's grace period), never while a task
merely runs. That is what lets one process drive 100 simulated tasks on each of 1,000
simulated nodes: all their workers share one Runner, i.e. a handful of threads.

Status changes are reported in batches, coalesced per task (only the latest status
of a task is sent). Trade-off: a batch waits up to FLUSH_INTERVAL (100 ms) before it
goes, which delays what `service ps` shows by that much, in exchange for one
dispatcher call (and one store write) per node per interval instead of one per
transition; a task walks through 5 states in a few ms when its image is present.

The worker keeps its own observed status per task. The manager's copy in an
assignment only seeds a task the worker does not know (after an agent restart), so
a reconnect's full set never restarts running tasks, and the controller's idempotent
actions adopt containers a previous agent left.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from api import objects_pb2 as objects
from api import swarm_pb2 as swarm
from api.tasks import is_terminal

from .exec import Controller, Executor, Later, TemporaryError
from .lifecycle import do, transition

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.1  # seconds; see the module docstring
RETRY_DELAY = 1.0  # seconds before a step that hit a TemporaryError runs again

Report = Callable[[list[tuple[str, objects.TaskStatus]]], None]


class Runner:
    """A small thread pool and one timer thread, shared by any number of workers."""

    def __init__(self, *, threads: int = 8, clock: Callable[[], float] = time.monotonic) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="task")
        self._clock = clock
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._timer = threading.Thread(target=self._run_timers, name="task-timers", daemon=True)
        self._timer.start()

    def submit(self, fn: Callable[[], None]) -> None:
        if not self._stopped:
            self._pool.submit(self._guard, fn)

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (self._clock() + delay, next(self._seq), fn))
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._timer.join()
        self._pool.shutdown(wait=True, cancel_futures=True)

    @staticmethod
    def _guard(fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            log.exception("task worker step failed")

    def _run_timers(self) -> None:
        with self._cond:
            while not self._stopped:
                now = self._clock()
                while self._heap and self._heap[0][0] <= now:
                    self._pool.submit(self._guard, heapq.heappop(self._heap)[2])
                timeout = self._heap[0][0] - now if self._heap else None
                self._cond.wait(timeout)


@dataclass
class _Task:
    task: objects.Task
    status: objects.TaskStatus
    ctl: Controller | None = None
    busy: bool = False  # a step is running or queued: the per-task sequence
    dirty: bool = False  # something changed while it ran: step again
    deleted: bool = False  # no longer assigned: shut down, remove, forget
    removed: bool = False  # its container is gone
    closed: bool = False


@dataclass
class _Files:
    secrets: dict[str, objects.Secret] = field(default_factory=dict)
    configs: dict[str, objects.Config] = field(default_factory=dict)


class Worker:
    def __init__(
        self,
        executor: Executor,
        *,
        report: Report,
        node_id: str = "",
        runner: Runner | None = None,
        flush_interval: float = FLUSH_INTERVAL,
        retry_delay: float = RETRY_DELAY,
    ) -> None:
        self.executor = executor
        self.node_id = node_id
        self._report = report
        self._own_runner = runner is None
        self._runner = runner or Runner(threads=64)
        self._flush_interval = flush_interval
        self._retry_delay = retry_delay
        self._lock = threading.Lock()
        self._tasks: dict[str, _Task] = {}
        self._files = _Files()
        self._pending: dict[str, objects.TaskStatus] = {}
        self._stopped = False

    # ---- FileSource, for the controllers -----------------------------------

    def secret(self, secret_id: str) -> objects.Secret | None:
        return self._files.secrets.get(secret_id)

    def config(self, config_id: str) -> objects.Config | None:
        return self._files.configs.get(config_id)

    # ---- assignments ---------------------------------------------------------

    def apply(self, message: swarm.AssignmentsMessage) -> None:
        self.assign(
            list(message.tasks),
            full=message.full,
            removed=list(message.removed_tasks),
            secrets=list(message.secrets),
            removed_secrets=list(message.removed_secrets),
            configs=list(message.configs),
            removed_configs=list(message.removed_configs),
        )

    def assign(
        self,
        tasks: Iterable[objects.Task],
        *,
        full: bool,
        removed: Iterable[str] = (),
        secrets: Iterable[objects.Secret] = (),
        removed_secrets: Iterable[str] = (),
        configs: Iterable[objects.Config] = (),
        removed_configs: Iterable[str] = (),
    ) -> None:
        """Apply one assignments message; `full` replaces the whole set."""
        tasks = list(tasks)
        # Files first: a task of this same message may be prepared at once.
        self._update_files(full, secrets, removed_secrets, configs, removed_configs)
        kick: set[str] = set()
        with self._lock:
            gone = set(removed)
            if full:
                gone |= set(self._tasks) - {t.meta.id for t in tasks}
            for task in tasks:
                gone.discard(task.meta.id)
                kick.add(self._upsert(task))
            for task_id in gone:
                if task_id in self._tasks:
                    self._tasks[task_id].deleted = True
                    kick.add(task_id)
            known = set(self._tasks)
        if full:
            kick |= self._adopt_orphans(known)
        for task_id in kick:
            self._kick(task_id)

    def _update_files(
        self,
        full: bool,
        secrets: Iterable[objects.Secret],
        removed_secrets: Iterable[str],
        configs: Iterable[objects.Config],
        removed_configs: Iterable[str],
    ) -> None:
        new = _Files() if full else _Files(dict(self._files.secrets), dict(self._files.configs))
        new.secrets.update((s.meta.id, s) for s in secrets)
        new.configs.update((c.meta.id, c) for c in configs)
        for sid in removed_secrets:
            new.secrets.pop(sid, None)
        for cid in removed_configs:
            new.configs.pop(cid, None)
        self._files = new  # swapped whole: readers on other threads see one or the other

    def _upsert(self, task: objects.Task) -> str:
        slot = self._tasks.get(task.meta.id)
        if slot is None:
            # Unknown here (new, or the agent restarted): the manager's status seeds it.
            status = objects.TaskStatus()
            status.CopyFrom(task.status)
            self._tasks[task.meta.id] = _Task(task=task, status=status)
        else:
            slot.task = task
            slot.deleted = False
        return task.meta.id

    def _adopt_orphans(self, known: set[str]) -> set[str]:
        """Containers of tasks this node no longer has (deleted while the agent was
        away) are taken on as deleted tasks, to be removed; those of assigned tasks are
        adopted by their own steps."""
        orphans = self.executor.existing() - known
        with self._lock:
            for task_id in orphans:
                stub = objects.Task(desired_state=objects.TASK_REMOVE)
                stub.meta.id = task_id
                stub.status.state = objects.TASK_ORPHANED
                self._tasks.setdefault(task_id, _Task(task=stub, status=stub.status, deleted=True))
        return orphans

    # ---- queries and shutdown ---------------------------------------------------

    def status(self, task_id: str) -> objects.TaskStatus | None:
        with self._lock:
            slot = self._tasks.get(task_id)
            return slot.status if slot else None

    def statuses(self) -> dict[str, objects.TaskStatus]:
        with self._lock:
            return {tid: slot.status for tid, slot in self._tasks.items()}

    def stop(self) -> None:
        """Stop driving tasks; their containers keep running (live restore)."""
        self._stopped = True
        if self._own_runner:
            self._runner.stop()
        with self._lock:
            slots = list(self._tasks.values())
        for slot in slots:
            if slot.ctl is not None and not slot.closed:
                slot.ctl.close()
        self.flush()

    # ---- stepping ------------------------------------------------------------

    def _kick(self, task_id: str) -> None:
        with self._lock:
            slot = self._tasks.get(task_id)
            if slot is None or self._stopped:
                return
            if slot.busy:
                slot.dirty = True
                return
            slot.busy = True
        self._runner.submit(lambda: self._run(task_id))

    def _run(self, task_id: str) -> None:
        """Step one task until it parks; only ever running once per task at a time."""
        while not self._stopped:
            with self._lock:
                slot = self._tasks[task_id]
                slot.dirty = False
            progressed = self._step(task_id, slot)
            with self._lock:
                if slot.deleted and slot.removed:
                    del self._tasks[task_id]
                    return
                if not (progressed or slot.dirty) or self._stopped:
                    slot.busy = False
                    return
        with self._lock:
            slot.busy = False

    def _step(self, task_id: str, slot: _Task) -> bool:
        task, status = slot.task, slot.status
        if slot.deleted and task.desired_state < objects.TASK_REMOVE:
            task = objects.Task()
            task.CopyFrom(slot.task)
            task.desired_state = objects.TASK_REMOVE
        ctl = self._controller(slot)
        try:
            new = status if is_terminal(status.state) else self._do(task, status, ctl, task_id)
            if is_terminal(new.state) and not slot.removed and self._wants_removal(slot, task):
                ctl.remove()
                slot.removed = True
        except Later as later:
            self._runner.call_later(later.seconds, lambda: self._kick(task_id))
            return False
        except TemporaryError as exc:
            log.warning("task %s: %s (retrying)", task_id, exc.message)
            self._runner.call_later(self._retry_delay, lambda: self._kick(task_id))
            return False
        if is_terminal(new.state) and not slot.closed:
            ctl.close()
            slot.closed = True
        if new == status:
            return False
        with self._lock:
            slot.status = new
        if not slot.deleted:
            self._queue(task_id, new)
        return True

    def _do(
        self, task: objects.Task, status: objects.TaskStatus, ctl: Controller, task_id: str
    ) -> objects.TaskStatus:
        try:
            return do(task, status, ctl, wake=lambda: self._kick(task_id))
        except (Later, TemporaryError):
            raise
        except Exception as exc:  # a bug or an engine surprise must not wedge the task
            log.exception("task %s", task_id)
            return transition(status, objects.TASK_FAILED, status.message, err=str(exc))

    @staticmethod
    def _wants_removal(slot: _Task, task: objects.Task) -> bool:
        return slot.deleted or task.desired_state >= objects.TASK_REMOVE

    def _controller(self, slot: _Task) -> Controller:
        if slot.ctl is None:
            slot.ctl = self.executor.controller(slot.task, files=self)
        return slot.ctl

    # ---- reporting -----------------------------------------------------------

    def _queue(self, task_id: str, status: objects.TaskStatus) -> None:
        with self._lock:
            first = not self._pending
            self._pending[task_id] = status  # coalesced: only the latest goes
        if first:
            self._runner.call_later(self._flush_interval, self.flush)

    def flush(self) -> None:
        """Report what is pending now (the timer calls this every FLUSH_INTERVAL)."""
        with self._lock:
            batch = list(self._pending.items())
            self._pending.clear()
        if not batch:
            return
        try:
            self._report(batch)
        except Exception:
            log.exception("reporting task statuses; retrying")
            with self._lock:
                for task_id, status in batch:
                    self._pending.setdefault(task_id, status)  # a newer one wins
            if not self._stopped:
                self._runner.call_later(self._flush_interval, self.flush)

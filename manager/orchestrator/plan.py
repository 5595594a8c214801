"""A Plan: one service's reconciliation, decided on local copies, then written in batches.

The modules decide against `Plan.tasks` (copies read from the store) and record what to
write; a decision made early in a pass (a task shut down) is visible to the later ones
(slot counting) because the copies are changed too. `commit` then writes it all through
`store.batch`, in this order so that no applied proposal ever shows two live tasks in a
slot: desired-state raises, then creates, then deletes, then the service's status.

Every task write re-reads the task inside its callback (the dispatcher writes status
concurrently) and only ever *raises* desired_state: it moves forward like the observed
state (READY → RUNNING → COMPLETE → SHUTDOWN → REMOVE), so a re-read that finds it
already further along leaves it alone and nothing can be undone by a stale decision.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from api import objects_pb2 as objects
from manager import store as st
from manager.orchestrator.common import State, is_live

T = TypeVar("T")
ServiceChange = Callable[[objects.Service], bool]  # changes the re-read service; False: skip
_CHUNK = st.MAX_ACTIONS_PER_PROPOSAL


class Plan:
    """What one pass over a service decided, and the task copies it decided on."""

    def __init__(self, service_id: str, tasks: Sequence[objects.Task]) -> None:
        self.service_id = service_id
        self.tasks: dict[str, objects.Task] = {t.meta.id: t for t in tasks}
        self.creates: list[objects.Task] = []
        self.desired: dict[str, State] = {}
        self.deletes: list[str] = []
        self.service_change: ServiceChange | None = None
        self.after: list[Callable[[], None]] = []  # memory to keep once written
        self._created: set[str] = set()

    def live(self) -> list[objects.Task]:
        return [t for t in self.tasks.values() if is_live(t)]

    def create(self, task: objects.Task) -> objects.Task:
        self.tasks[task.meta.id] = task
        self.creates.append(task)
        self._created.add(task.meta.id)
        return task

    def set_desired(self, task: objects.Task, state: State) -> None:
        if task.desired_state >= state:
            return
        task.desired_state = state
        stop_unassigned(task)
        if task.meta.id not in self._created:
            self.desired[task.meta.id] = state

    def delete(self, task: objects.Task) -> None:
        self.tasks.pop(task.meta.id, None)
        self.desired.pop(task.meta.id, None)
        self.deletes.append(task.meta.id)

    def empty(self) -> bool:
        return not (self.creates or self.desired or self.deletes or self.service_change)


def commit(store: st.MemoryStore, plan: Plan) -> None:
    """Write the plan; raises what the store raises (the caller retries the service)."""
    raises = sorted(plan.desired.items())

    def run(batch: st.Batch) -> None:
        for chunk in _chunks(raises):
            batch.update(functools.partial(_raise_desired, chunk))
        for tasks in _chunks(plan.creates):
            batch.update(functools.partial(_create, tasks))
        for ids in _chunks(plan.deletes):
            batch.update(functools.partial(_delete, ids))

    if raises or plan.creates or plan.deletes:
        store.batch(run)
    if plan.service_change is not None:
        change = functools.partial(_change_service, plan.service_id, plan.service_change)
        store.update_retrying(change)
    for fn in plan.after:
        fn()


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _raise_desired(changes: Sequence[tuple[str, State]], tx: st.Tx) -> None:
    for task_id, state in changes:
        task = st.get_task(tx, task_id)
        if task is not None and task.desired_state < state:
            task.desired_state = state
            stop_unassigned(task)
            st.update_task(tx, task)


def stop_unassigned(task: objects.Task) -> None:
    """A task no node has yet (NEW, PENDING) has no agent to report it stopped: once it
    is not wanted, it is SHUTDOWN at once, or a stop-first update would wait forever.
    (If the scheduler assigned it meanwhile, the re-read shows that and this is a no-op.)"""
    if task.desired_state >= objects.TASK_SHUTDOWN and task.status.state < objects.TASK_ASSIGNED:
        task.status.state = objects.TASK_SHUTDOWN
        task.status.message = "shutdown before assignment"
        task.status.err = ""


def _create(tasks: Sequence[objects.Task], tx: st.Tx) -> None:
    for task in tasks:
        st.create_task(tx, task)


def _delete(ids: Sequence[str], tx: st.Tx) -> None:
    for task_id in ids:
        if st.get_task(tx, task_id) is not None:
            st.delete_task(tx, task_id)


def _change_service(service_id: str, change: ServiceChange, tx: st.Tx) -> None:
    service = st.get_service(tx, service_id)
    if service is not None and change(service):
        st.update_service(tx, service)

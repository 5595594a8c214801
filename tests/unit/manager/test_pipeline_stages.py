"""The allocator and the status batcher against a real in-memory store."""

from __future__ import annotations

import functools

import pytest

from api import objects_pb2 as objects
from manager import store as st
from manager.allocator import Allocator
from manager.taskstatus import StatusBatcher, _write_status
from tests.daemons import wait_for

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


def task(task_id: str, *, state: int = objects.TASK_NEW, node: str = "") -> objects.Task:
    t = objects.Task(service_id="svc", node_id=node)
    t.meta.id = task_id
    t.status.state = state  # type: ignore[assignment]
    return t


def state_of(store: st.MemoryStore, task_id: str) -> objects.TaskStatus:
    found = store.view(lambda tx: st.get_task(tx, task_id))
    assert found is not None
    return found.status


@pytest.fixture
def store() -> st.MemoryStore:
    return st.MemoryStore()


def test_allocator_moves_new_tasks_to_pending_existing_and_created(
    store: st.MemoryStore,
) -> None:
    store.update(lambda tx: st.create_task(tx, task("before")))
    stage = Allocator(store)
    stage.start()
    try:

        def create(batch: st.Batch) -> None:
            for i in range(500):
                batch.update(functools.partial(st.create_task, task=task(f"t{i:03d}")))

        store.batch(create)
        wait_for(
            lambda: all(
                t.status.state == objects.TASK_PENDING
                for t in store.view(lambda tx: st.find_tasks(tx))
            ),
            timeout=10,
            what="every task pending",
        )
        assert state_of(store, "before").message == "pending task scheduling"
    finally:
        stage.stop()
    stage.start()  # again, as on the next leadership
    store.update(lambda tx: st.create_task(tx, task("after")))
    wait_for(
        lambda: state_of(store, "after").state == objects.TASK_PENDING,
        timeout=10,
        what="a task made after a restart pending",
    )
    stage.stop()


def test_status_batcher_writes_forward_only_and_only_from_the_tasks_node(
    store: st.MemoryStore,
) -> None:
    store.update(lambda tx: st.create_task(tx, task("a", state=objects.TASK_ASSIGNED, node="n1")))
    batcher = StatusBatcher(store)
    batcher.start()
    try:
        running = objects.TaskStatus(state=objects.TASK_RUNNING, message="started")
        batcher.report("n1", [("a", running)])
        wait_for(
            lambda: state_of(store, "a").state == objects.TASK_RUNNING,
            timeout=10,
            what="the report written",
        )
    finally:
        batcher.stop()


@pytest.mark.parametrize(
    ("node", "status", "written"),
    [
        ("n1", objects.TaskStatus(state=objects.TASK_STARTING), False),  # overtaken: behind
        ("n2", objects.TaskStatus(state=objects.TASK_FAILED), False),  # not the task's node
        ("n1", objects.TaskStatus(state=objects.TASK_RUNNING, healthy=True), True),  # news
        ("n1", objects.TaskStatus(state=objects.TASK_COMPLETE), True),  # forward
    ],
)
def test_a_status_is_written_only_forward_and_from_the_tasks_node(
    store: st.MemoryStore, node: str, status: objects.TaskStatus, written: bool
) -> None:
    store.update(lambda tx: st.create_task(tx, task("a", state=objects.TASK_RUNNING, node="n1")))
    store.update(lambda tx: _write_status(tx, task_id="a", node_id=node, status=status))
    assert (state_of(store, "a") == status) is written
    store.update(lambda tx: _write_status(tx, task_id="gone", node_id="n1", status=status))

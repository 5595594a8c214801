"""The Scheduler loop against a real MemoryStore (no Raft: it applies its own batches)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from api import objects_pb2 as objects
from api.errors import Unavailable
from manager import store as st
from manager.scheduler import Scheduler
from tests import daemons

from .harness import GIB, node, task

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]
T = TypeVar("T")


def wait_for(predicate: Callable[[], T | None], *, what: str, timeout: float = 10.0) -> T:
    """Poll until ready (the shared helper), with a unit-test-sized default timeout."""
    return daemons.wait_for(predicate, timeout=timeout, what=what, interval=0.01)


def create(store: st.MemoryStore, *objs: objects.Node | objects.Task) -> None:
    def fn(tx: st.Tx) -> None:
        for obj in objs:
            if isinstance(obj, objects.Node):
                st.create_node(tx, obj)
            else:
                st.create_task(tx, obj)

    store.update(fn)


def get(store: st.MemoryStore, task_id: str) -> objects.Task:
    found = store.view(lambda tx: st.get_task(tx, task_id))
    assert found is not None
    return found


def assigned(store: st.MemoryStore, *task_ids: str) -> dict[str, str] | None:
    tasks = [get(store, i) for i in task_ids]
    if all(t.status.state == objects.TASK_ASSIGNED for t in tasks):
        return {t.meta.id: t.node_id for t in tasks}
    return None


@pytest.fixture
def store() -> st.MemoryStore:
    return st.MemoryStore()


@pytest.fixture
def scheduler(store: st.MemoryStore) -> Iterator[Scheduler]:
    s = Scheduler(store, rng=random.Random(3), wall=lambda: 1234.5)
    s.start()
    yield s
    s.stop()


def test_pending_tasks_get_assigned_and_spread(store: st.MemoryStore, scheduler: Scheduler) -> None:
    create(store, node("n1"), node("n2"), node("n3"))
    pending = [task(f"t{i}") for i in range(6)]
    create(store, *pending)
    placed = wait_for(lambda: assigned(store, *(t.meta.id for t in pending)), what="assignments")
    assert sorted(list(placed.values()).count(n) for n in ("n1", "n2", "n3")) == [2, 2, 2]
    t = get(store, "t0")
    assert (t.status.message, t.status.err, t.status.timestamp) == ("assigned", "", 1234.5)


def test_tasks_pending_before_start_are_assigned(store: st.MemoryStore) -> None:
    create(store, node("n1"), task("t0"), task("t1", desired=objects.TASK_READY))
    s = Scheduler(store, rng=random.Random(1))
    s.start()
    try:
        wait_for(lambda: assigned(store, "t0", "t1"), what="assignments")
    finally:
        s.stop()
        s.stop()  # idempotent


def test_unschedulable_task_waits_for_a_fitting_node(
    store: st.MemoryStore, scheduler: Scheduler
) -> None:
    create(store, node("small", memory=GIB))
    create(store, task("big", memory=4 * GIB))
    reason = "no suitable node (insufficient memory on 1 node)"
    wait_for(lambda: get(store, "big").status.err == reason, what="the reason")
    assert get(store, "big").status.state == objects.TASK_PENDING
    create(store, node("large", memory=8 * GIB))
    assert wait_for(lambda: assigned(store, "big"), what="assignment") == {"big": "large"}
    assert get(store, "big").status.err == ""


def test_freed_capacity_and_changed_nodes_retry_pending_tasks(
    store: st.MemoryStore, scheduler: Scheduler
) -> None:
    create(store, node("n1", memory=2 * GIB, availability=objects.DRAIN))
    create(store, task("a", memory=2 * GIB))
    wait_for(lambda: get(store, "a").status.err, what="a's reason")

    def activate(tx: st.Tx) -> None:
        n = st.get_node(tx, "n1")
        assert n is not None
        n.spec.availability = objects.ACTIVE
        st.update_node(tx, n)

    store.update(activate)
    wait_for(lambda: assigned(store, "a"), what="a assigned")
    create(store, task("b", memory=2 * GIB))
    reason = "no suitable node (insufficient memory on 1 node)"
    wait_for(lambda: get(store, "b").status.err == reason, what="b's reason")

    def finish(tx: st.Tx) -> None:
        a = st.get_task(tx, "a")
        assert a is not None
        a.status.state = objects.TASK_COMPLETE
        st.update_task(tx, a)

    store.update(finish)
    assert wait_for(lambda: assigned(store, "b"), what="b assigned") == {"b": "n1"}


def test_reason_is_written_once(store: st.MemoryStore, scheduler: Scheduler) -> None:
    create(store, node("n1", state=objects.DOWN), task("t", memory=GIB))
    wait_for(lambda: get(store, "t").status.err, what="the reason")
    version = get(store, "t").meta.version
    # Unrelated churn makes the scheduler plan again; the same reason is not rewritten.
    create(store, task("other", constraints=["node.hostname==nowhere"]))
    wait_for(lambda: get(store, "other").status.err, what="the other reason")
    assert get(store, "t").meta.version == version


def test_a_task_changed_under_the_plan_is_skipped(store: st.MemoryStore) -> None:
    create(store, node("n1"), task("t"))
    s = Scheduler(store, rng=random.Random(1))

    original = store.batch

    def racing_batch(fn: Callable[[st.Batch], object], **kwargs: int) -> object:
        # Another writer (the orchestrator) shuts the task down between plan and commit.
        def shut(tx: st.Tx) -> None:
            t = st.get_task(tx, "t")
            assert t is not None
            t.desired_state = objects.TASK_SHUTDOWN
            st.update_task(tx, t)

        store.update(shut)
        return original(fn, **kwargs)

    store.batch = racing_batch  # type: ignore[method-assign,assignment]
    s.start()
    try:
        wait_for(lambda: s.last_plan is not None, what="a plan")
        s.stop()
    finally:
        s.stop()
    t = get(store, "t")
    assert (t.status.state, t.node_id) == (objects.TASK_PENDING, "")


def test_store_errors_are_retried_not_fatal(store: st.MemoryStore) -> None:
    create(store, node("n1"), task("t"))
    s = Scheduler(store, rng=random.Random(1))
    original = store.batch
    failures = iter([Unavailable("not the leader"), None])

    def flaky_batch(fn: Callable[[st.Batch], object], **kwargs: int) -> object:
        error = next(failures, None)
        if error is not None:
            raise error
        return original(fn, **kwargs)

    store.batch = flaky_batch  # type: ignore[method-assign,assignment]
    s.start()
    try:
        wait_for(lambda: assigned(store, "t"), what="assignment after a retry")
    finally:
        s.stop()


def test_reset_relists(store: st.MemoryStore, scheduler: Scheduler) -> None:
    create(store, node("n1"))
    other = st.MemoryStore()
    create(other, node("n9"), task("t"))
    store.restore(other.snapshot())
    assert wait_for(lambda: assigned(store, "t"), what="assignment after restore") == {"t": "n9"}


def test_global_task_goes_to_its_node_only(store: st.MemoryStore, scheduler: Scheduler) -> None:
    create(store, node("n1"), node("n2", availability=objects.PAUSE))
    create(store, task("g1", service="g", node_id="n1"), task("g2", service="g", node_id="n2"))
    assert wait_for(lambda: assigned(store, "g1"), what="g1") == {"g1": "n1"}
    wait_for(lambda: get(store, "g2").status.err, what="g2's reason")
    assert get(store, "g2").status.err == "no suitable node (1 node not available for new tasks)"

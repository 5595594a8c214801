"""The Orchestrator's threads: it follows the store on its own, and stops cleanly."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from api import objects_pb2 as objects
from manager import store as st
from manager.orchestrator import Orchestrator

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


def eventually(check: Callable[[], bool], *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def live_count(store: st.MemoryStore, service_id: str) -> int:
    tasks = store.view(lambda tx: st.find_tasks(tx, by=st.ByService(service_id)))
    return sum(t.desired_state == objects.TASK_RUNNING for t in tasks)


def test_threads_follow_the_store_and_stop() -> None:
    store = st.MemoryStore()
    orch = Orchestrator(store)
    orch.start()
    try:
        spec = objects.ServiceSpec(name="web", replicas=3)
        service = objects.Service(meta=objects.Meta(id="s1"), spec=spec, spec_version=1)
        store.update(lambda tx: st.create_service(tx, service))
        eventually(lambda: live_count(store, "s1") == 3)

        def scale(tx: st.Tx) -> None:
            current = st.get_service(tx, "s1")
            assert current is not None
            current.spec.replicas = 5
            st.update_service(tx, current)

        store.update(scale)
        eventually(lambda: live_count(store, "s1") == 5)
        store.update(lambda tx: st.delete_service(tx, "s1"))
        eventually(lambda: not store.view(lambda tx: st.find_tasks(tx)))
    finally:
        orch.stop()
    orch.stop()  # idempotent
    assert not [t for t in orch._threads if t.is_alive()]


def test_relists_after_a_restore() -> None:
    store = st.MemoryStore()
    orch = Orchestrator(store)
    orch.start()
    try:
        other = st.MemoryStore()
        spec = objects.ServiceSpec(name="web", replicas=2)
        service = objects.Service(meta=objects.Meta(id="s1"), spec=spec, spec_version=1)
        other.update(lambda tx: st.create_service(tx, service))
        store.restore(other.snapshot())  # a Reset: the watcher lists everything again
        eventually(lambda: live_count(store, "s1") == 2)
    finally:
        orch.stop()


@pytest.mark.timeout(120)
def test_creates_many_tasks_in_batches() -> None:
    store = st.MemoryStore()
    orch = Orchestrator(store)
    spec = objects.ServiceSpec(name="big", replicas=20_000)
    service = objects.Service(meta=objects.Meta(id="big"), spec=spec, spec_version=1)
    store.update(lambda tx: st.create_service(tx, service))
    before_version = store.version
    started = time.process_time()
    orch.reconcile_all()
    cpu = time.process_time() - started
    assert live_count(store, "big") == 20_000
    assert store.version - before_version == 100  # 200 writes a proposal
    assert cpu < 10  # ~1 s here; generous for slow CI machines

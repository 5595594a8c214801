"""A small swarm for orchestrator tests: a real MemoryStore, a fake clock, and helpers
that play the control API, the allocator/scheduler and the agents by writing into the
store directly. The orchestrator is driven with reconcile_all()/tick(), never threads.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from api import objects_pb2 as objects
from api import tasks as api_tasks
from manager import store as st
from manager.orchestrator import Orchestrator
from manager.orchestrator.common import is_live

pytestmark = pytest.mark.unit

US = objects.UpdateStatus


class Clock:
    """Both the monotonic and the wall clock of a test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Swarm:
    def __init__(self) -> None:
        self.clock = Clock()
        self.store = st.MemoryStore(clock=self.clock)
        self.orch = Orchestrator(self.store, clock=self.clock, wall=self.clock)
        self._ids = itertools.count(1)
        self._rr = itertools.count()

    # ---- the control API's part ----------------------------------------------------------

    def add_node(
        self,
        node_id: str,
        *,
        labels: dict[str, str] | None = None,
        availability: objects.Availability.ValueType = objects.ACTIVE,
        state: objects.NodeState.ValueType = objects.READY,
    ) -> None:
        node = objects.Node(meta=objects.Meta(id=node_id))
        node.spec.labels.update(labels or {})
        node.spec.availability = availability
        node.status.state = state
        node.description.hostname = node_id
        self.store.update(lambda tx: st.create_node(tx, node))

    def change_node(self, node_id: str, fn: Callable[[objects.Node], None]) -> None:
        def change(tx: st.Tx) -> None:
            node = st.get_node(tx, node_id)
            assert node is not None
            fn(node)
            st.update_node(tx, node)

        self.store.update(change)

    def remove_node(self, node_id: str) -> None:
        self.store.update(lambda tx: st.delete_node(tx, node_id))

    def create_service(
        self,
        name: str = "web",
        *,
        replicas: int = 1,
        mode: objects.ServiceMode.ValueType = objects.REPLICATED,
        edit: Callable[[objects.ServiceSpec], None] | None = None,
    ) -> str:
        spec = objects.ServiceSpec(name=name, mode=mode, replicas=replicas)
        spec.task.container.image = "busybox"
        if edit is not None:
            edit(spec)
        service = objects.Service(spec=spec, spec_version=1)
        service.meta.id = f"svc{next(self._ids)}"
        service.endpoint.spec.CopyFrom(spec.endpoint)
        self.store.update(lambda tx: st.create_service(tx, service))
        return service.meta.id

    def update_service(
        self, service_id: str, edit: Callable[[objects.ServiceSpec], None], *, force: bool = False
    ) -> None:
        """`service update` as the control API does it (spec_version, UPDATING)."""

        def change(tx: st.Tx) -> None:
            service = st.get_service(tx, service_id)
            assert service is not None
            old = objects.ServiceSpec()
            old.CopyFrom(service.spec)
            edit(service.spec)
            if force:
                service.spec.task.force_update += 1
            service.previous_spec.CopyFrom(old)
            if old.task != service.spec.task:
                service.spec_version += 1
                if service.spec.mode in (objects.REPLICATED_JOB, objects.GLOBAL_JOB):
                    service.job_iteration += 1
                service.update_status.CopyFrom(
                    US(state=US.UPDATING, started_at=self.clock.now, message="update in progress")
                )
            st.update_service(tx, service)

        self.store.update(change)

    def scale(self, service_id: str, replicas: int) -> None:
        def edit(spec: objects.ServiceSpec) -> None:
            spec.replicas = replicas

        self.update_service(service_id, edit)

    def delete_service(self, service_id: str) -> None:
        self.store.update(lambda tx: st.delete_service(tx, service_id))

    def service(self, service_id: str) -> objects.Service:
        service = self.store.view(lambda tx: st.get_service(tx, service_id))
        assert service is not None
        return service

    # ---- reading tasks ---------------------------------------------------------------------

    def tasks(self, service_id: str) -> list[objects.Task]:
        return self.store.view(lambda tx: st.find_tasks(tx, by=st.ByService(service_id)))

    def live(self, service_id: str) -> list[objects.Task]:
        return sorted(
            (t for t in self.tasks(service_id) if is_live(t)),
            key=lambda t: (t.slot, t.spec_version, t.node_id),
        )

    def running_slots(self, service_id: str) -> list[int]:
        return sorted(t.slot for t in self.live(service_id))

    def task(self, task_id: str) -> objects.Task:
        task = self.store.view(lambda tx: st.get_task(tx, task_id))
        assert task is not None
        return task

    # ---- the allocator, scheduler and agents' part ------------------------------------------

    def set_state(
        self,
        task_id: str,
        state: objects.TaskState.ValueType,
        *,
        exit_code: int = 0,
        node_id: str | None = None,
    ) -> None:
        def change(tx: st.Tx) -> None:
            task = st.get_task(tx, task_id)
            assert task is not None
            task.status.state = state
            task.status.timestamp = self.clock.now
            task.status.container.exit_code = exit_code
            if node_id is not None:
                task.node_id = node_id
            st.update_task(tx, task)

        self.store.update(change)

    def agents(self, *, nodes: list[str] | None = None) -> int:
        """Run what is desired: place unplaced tasks round-robin on `nodes`, start the
        desired-RUNNING/COMPLETE ones (to RUNNING), stop the shut-down ones. Returns the
        number of tasks changed."""
        nodes = nodes or []
        changed = 0
        everything = self.store.view(lambda tx: st.find_tasks(tx))
        for task in everything:
            state = task.status.state
            if api_tasks.is_terminal(state):
                continue
            node = None
            if not task.node_id and nodes:
                node = nodes[next(self._rr) % len(nodes)]
            if task.desired_state in (objects.TASK_RUNNING, objects.TASK_COMPLETE):
                if state != objects.TASK_RUNNING:
                    self.set_state(task.meta.id, objects.TASK_RUNNING, node_id=node)
                    changed += 1
            elif task.desired_state >= objects.TASK_SHUTDOWN:
                self.set_state(task.meta.id, objects.TASK_SHUTDOWN)
                changed += 1
        return changed

    def settle(self, *, nodes: list[str] | None = None, rounds: int = 20) -> None:
        """Orchestrate and run until nothing changes (no time passes)."""
        for _ in range(rounds):
            self.orch.reconcile_all()
            if not self.agents(nodes=nodes):
                self.orch.reconcile_all()
                return
        raise AssertionError("the swarm did not settle")

    def advance(self, seconds: float) -> None:
        self.clock.now += seconds
        self.orch.tick()


@pytest.mark.timeout(30)
def test_harness_creates_and_runs() -> None:
    swarm = Swarm()
    swarm.add_node("n1")
    sid = swarm.create_service(replicas=2)
    swarm.settle(nodes=["n1"])
    assert [t.status.state for t in swarm.live(sid)] == [objects.TASK_RUNNING] * 2

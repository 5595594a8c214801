"""What the scheduler knows about one node: the node itself and what occupies it.

A task occupies its node from ASSIGNED until its observed state is terminal, unless
its desired state is already SHUTDOWN or beyond: the orchestrator has given up on it,
so its place is free for the replacement (swarmkit frees it at the same moment).
Everything derived from the occupying tasks (counts per service, reserved resources,
host-mode ports) is kept incrementally by `add_task`/`remove_task`, never recomputed.

Recent failures are kept per service version, so that spread can steer a version that
keeps failing on a node elsewhere (swarmkit's maxFailures / monitorFailures).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from api import objects_pb2 as objects

MAX_FAILURES: Final = 5  # this many recent failures of a service version penalise a node
MONITOR_FAILURES: Final = 300.0  # seconds a failure counts as recent

HostPort = tuple[str, int]  # (protocol, published port)
ServiceVersion = tuple[str, int]  # (service id, spec version)


def occupies(task: objects.Task) -> bool:
    """Whether `task` holds a place (resources, ports, a replica slot) on its node."""
    return (
        bool(task.node_id)
        and objects.TASK_ASSIGNED <= task.status.state <= objects.TASK_RUNNING
        and task.desired_state < objects.TASK_SHUTDOWN
    )


def host_ports(task: objects.Task) -> list[HostPort]:
    """The host-mode ports `task` publishes; port 0 (any free port) never conflicts."""
    return [
        (p.protocol or "tcp", p.published_port)
        for p in task.endpoint.ports
        if p.publish_mode == "host" and p.published_port
    ]


@dataclass(frozen=True)
class Footprint:
    """What a task takes from its node; computed once for a group of identical tasks."""

    service_id: str
    nano_cpus: int
    memory_bytes: int
    ports: tuple[HostPort, ...]

    @classmethod
    def of(cls, task: objects.Task) -> Footprint:
        reservations = task.spec.resources.reservations
        return cls(
            task.service_id,
            reservations.nano_cpus,
            reservations.memory_bytes,
            tuple(host_ports(task)),
        )


@dataclass(eq=False)
class NodeInfo:
    """One node and the tasks occupying it; see the module docstring."""

    node: objects.Node
    tasks: dict[str, objects.Task] = field(default_factory=dict)
    by_service: dict[str, int] = field(default_factory=dict)
    reserved_cpus: int = 0
    reserved_memory: int = 0
    ports: Counter[HostPort] = field(default_factory=Counter)
    failures: dict[ServiceVersion, list[float]] = field(default_factory=dict)
    # Cached from `node` whenever it is set (see __setattr__).
    node_id: str = field(init=False, repr=False)
    total_cpus: int = field(init=False, repr=False)
    total_memory: int = field(init=False, repr=False)

    @classmethod
    def build(cls, node: objects.Node, tasks: Iterable[objects.Task] = ()) -> NodeInfo:
        info = cls(node)
        for task in tasks:
            if occupies(task):
                info.add_task(task)
        return info

    def __setattr__(self, name: str, value: object) -> None:
        # Planning reads these per placement; protobuf field access is slow, so they are
        # cached, and kept right whenever the node is replaced.
        super().__setattr__(name, value)
        if name == "node":
            assert isinstance(value, objects.Node)
            super().__setattr__("node_id", value.meta.id)
            super().__setattr__("total_cpus", value.description.nano_cpus)
            super().__setattr__("total_memory", value.description.memory_bytes)

    @property
    def available_cpus(self) -> int:
        return self.total_cpus - self.reserved_cpus

    @property
    def available_memory(self) -> int:
        return self.total_memory - self.reserved_memory

    def add_task(self, task: objects.Task, *, footprint: Footprint | None = None) -> bool:
        """Count `task` as occupying this node (replacing an older copy of it); whether
        anything the scheduler looks at changed. `footprint` saves recomputing it."""
        fp = Footprint.of(task) if footprint is None else footprint
        old = self.tasks.get(task.meta.id)
        if old is not None:
            if Footprint.of(old) == fp:
                self.tasks[task.meta.id] = task
                return False
            self.remove_task(task.meta.id)
        self.tasks[task.meta.id] = task
        self.by_service[fp.service_id] = self.by_service.get(fp.service_id, 0) + 1
        self.reserved_cpus += fp.nano_cpus
        self.reserved_memory += fp.memory_bytes
        if fp.ports:
            self.ports.update(fp.ports)
        return True

    def remove_task(self, task_id: str) -> bool:
        """Stop counting the task; whether it was counted."""
        task = self.tasks.pop(task_id, None)
        if task is None:
            return False
        fp = Footprint.of(task)
        left = self.by_service[fp.service_id] - 1
        if left:
            self.by_service[fp.service_id] = left
        else:
            del self.by_service[fp.service_id]
        self.reserved_cpus -= fp.nano_cpus
        self.reserved_memory -= fp.memory_bytes
        if fp.ports:
            self.ports.subtract(fp.ports)
            self.ports = +self.ports  # drop zero counts, so `in` means "in use"
        return True

    def record_failure(self, task: objects.Task, *, now: float) -> None:
        """A task of this service version failed here at `now`."""
        times = self.failures.setdefault((task.service_id, task.spec_version), [])
        times.append(now)
        # Only the last MAX_FAILURES can matter for the threshold.
        del times[:-MAX_FAILURES]

    def recent_failures(self, service_id: str, spec_version: int, *, now: float) -> int:
        times = self.failures.get((service_id, spec_version), ())
        return sum(1 for t in times if now - t < MONITOR_FAILURES)

    def penalty(self, service_id: str, spec_version: int, *, now: float) -> int:
        """0 normally; the count of recent failures once it reaches MAX_FAILURES."""
        count = self.recent_failures(service_id, spec_version, now=now)
        return count if count >= MAX_FAILURES else 0

    def clone(self) -> NodeInfo:
        """A copy the planner may change; the tasks themselves are shared, unchanged."""
        return NodeInfo(
            node=self.node,
            tasks=dict(self.tasks),
            by_service=dict(self.by_service),
            reserved_cpus=self.reserved_cpus,
            reserved_memory=self.reserved_memory,
            ports=Counter(self.ports),
            failures={k: list(v) for k, v in self.failures.items()},
        )

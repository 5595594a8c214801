"""Placement filters: small checks a node must pass to take a task.

Each filter is told the task first (`set_task`, False when it has nothing to say about
this task, so the pipeline skips it), then asked about nodes (`check`), and finally
explains how many nodes it turned away (`explain`), in docker's words where docker has
some. A filter is `dynamic` when the planner's own placements can change its answer
for a node (resources, ports, replicas per node): those are re-checked before each
placement, the others once per node per task group.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from api import objects_pb2 as objects
from manager.scheduler.constraints import Constraint, parse_constraints
from manager.scheduler.nodeinfo import HostPort, NodeInfo, host_ports


def _nodes(count: int) -> str:
    return "1 node" if count == 1 else f"{count} nodes"


class Filter(ABC):
    dynamic = False

    @abstractmethod
    def set_task(self, task: objects.Task) -> bool:
        """Prepare for `task`; False if this filter does not apply to it."""

    @abstractmethod
    def check(self, info: NodeInfo) -> bool:
        """Whether the node may take the task."""

    @abstractmethod
    def explain(self, count: int) -> str:
        """Why `count` nodes were turned away."""


class ReadyFilter(Filter):
    """Only READY nodes with availability ACTIVE take new tasks (not PAUSE, DRAIN)."""

    def set_task(self, task: objects.Task) -> bool:
        return True

    def check(self, info: NodeInfo) -> bool:
        node = info.node
        return node.status.state == objects.READY and node.spec.availability == objects.ACTIVE

    def explain(self, count: int) -> str:
        return f"{_nodes(count)} not available for new tasks"


class _ResourceFilter(Filter):
    dynamic = True
    resource = ""

    def __init__(self) -> None:
        self._wanted = 0

    def set_task(self, task: objects.Task) -> bool:
        self._wanted = self._reservation(task.spec.resources.reservations)
        return self._wanted > 0

    def explain(self, count: int) -> str:
        return f"insufficient {self.resource} on {_nodes(count)}"

    @abstractmethod
    def _reservation(self, reservations: objects.Resources) -> int: ...


class MemoryFilter(_ResourceFilter):
    resource = "memory"

    def _reservation(self, reservations: objects.Resources) -> int:
        return reservations.memory_bytes

    def check(self, info: NodeInfo) -> bool:
        return info.available_memory >= self._wanted


class CpuFilter(_ResourceFilter):
    resource = "cpu"

    def _reservation(self, reservations: objects.Resources) -> int:
        return reservations.nano_cpus

    def check(self, info: NodeInfo) -> bool:
        return info.available_cpus >= self._wanted


class ConstraintFilter(Filter):
    """`--constraint` expressions, platform ones included (node.platform.os/arch)."""

    def __init__(self) -> None:
        self._constraints: list[Constraint] = []

    def set_task(self, task: objects.Task) -> bool:
        # The control API validated these at service create; a bad one here (an older
        # manager wrote it) raises InvalidArgument, which the planner reports per task.
        self._constraints = parse_constraints(task.spec.placement.constraints)
        return bool(self._constraints)

    def check(self, info: NodeInfo) -> bool:
        return all(c.matches(info.node) for c in self._constraints)

    def explain(self, count: int) -> str:
        return f"scheduling constraints not satisfied on {_nodes(count)}"


class HostPortFilter(Filter):
    """A host-mode published port can be bound by one task per node."""

    dynamic = True

    def __init__(self) -> None:
        self._ports: list[HostPort] = []

    def set_task(self, task: objects.Task) -> bool:
        self._ports = host_ports(task)
        return bool(self._ports)

    def check(self, info: NodeInfo) -> bool:
        return not any(p in info.ports for p in self._ports)

    def explain(self, count: int) -> str:
        return f"host-mode port already in use on {_nodes(count)}"


class MaxReplicasFilter(Filter):
    """`--replicas-max-per-node`."""

    dynamic = True

    def __init__(self) -> None:
        self._service_id = ""
        self._max = 0

    def set_task(self, task: objects.Task) -> bool:
        self._service_id = task.service_id
        self._max = task.spec.placement.max_replicas
        return self._max > 0

    def check(self, info: NodeInfo) -> bool:
        return info.by_service.get(self._service_id, 0) < self._max

    def explain(self, count: int) -> str:
        return "max replicas per node limit exceed"  # docker's words, count and all


def default_filters() -> list[Filter]:
    """In the order a node is judged: the first that turns it away is the one counted."""
    return [
        ReadyFilter(),
        ConstraintFilter(),
        MemoryFilter(),
        CpuFilter(),
        HostPortFilter(),
        MaxReplicasFilter(),
    ]

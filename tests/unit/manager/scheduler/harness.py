"""Builders for nodes and tasks, and a harness that records the plans it makes.

The harness keeps NodeInfos like the scheduler loop does and, after each plan, applies
the assignments to them as the store's events would, so a sequence of plans can be
asserted on step by step (nomad's scheduler/tests Harness, in miniature).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from api import objects_pb2 as objects
from manager.scheduler import NodeInfo, Plan, plan

GIB = 1 << 30
CPU = 10**9


def node(
    node_id: str,
    *,
    hostname: str = "",
    role: objects.NodeRole.ValueType = objects.WORKER,
    labels: Mapping[str, str] | None = None,
    cpus: float = 4,
    memory: int = 8 * GIB,
    os: str = "linux",
    arch: str = "x86_64",
    state: objects.NodeState.ValueType = objects.READY,
    availability: objects.Availability.ValueType = objects.ACTIVE,
    addr: str = "",
) -> objects.Node:
    return objects.Node(
        meta=objects.Meta(id=node_id, version=1),
        spec=objects.NodeSpec(labels=dict(labels or {}), availability=availability),
        description=objects.NodeDescription(
            hostname=hostname or f"host-{node_id}",
            os=os,
            arch=arch,
            nano_cpus=int(cpus * CPU),
            memory_bytes=memory,
        ),
        status=objects.NodeStatus(state=state, addr=addr),
        role=role,
    )


def task(
    task_id: str,
    *,
    service: str = "web",
    version: int = 1,
    memory: int = 0,
    cpus: float = 0,
    constraints: Sequence[str] = (),
    preferences: Sequence[str] = (),
    max_replicas: int = 0,
    host_ports: Sequence[int] = (),
    node_id: str = "",
    state: objects.TaskState.ValueType = objects.TASK_PENDING,
    desired: objects.TaskState.ValueType = objects.TASK_RUNNING,
) -> objects.Task:
    t = objects.Task(
        meta=objects.Meta(id=task_id, version=1),
        service_id=service,
        service_name=service,
        spec_version=version,
        node_id=node_id,
        desired_state=desired,
        status=objects.TaskStatus(state=state),
    )
    t.spec.container.image = f"{service}:latest"
    t.spec.resources.reservations.memory_bytes = memory
    t.spec.resources.reservations.nano_cpus = int(cpus * CPU)
    t.spec.placement.constraints.extend(constraints)
    t.spec.placement.preferences.extend(preferences)
    t.spec.placement.max_replicas = max_replicas
    for port in host_ports:
        t.endpoint.ports.add(
            protocol="tcp", target_port=80, published_port=port, publish_mode="host"
        )
    return t


def tasks(count: int, *, prefix: str = "t", **kwargs: object) -> list[objects.Task]:
    return [task(f"{prefix}{i:03d}", **kwargs) for i in range(count)]  # type: ignore[arg-type]


def running(t: objects.Task, node_id: str) -> objects.Task:
    """`t` as it looks once assigned to `node_id` and running there."""
    out = objects.Task()
    out.CopyFrom(t)
    out.node_id = node_id
    out.status.state = objects.TASK_RUNNING
    return out


def infos(
    nodes: Iterable[objects.Node], existing: Iterable[objects.Task] = ()
) -> dict[str, NodeInfo]:
    by_node: dict[str, list[objects.Task]] = {}
    for t in existing:
        by_node.setdefault(t.node_id, []).append(t)
    return {n.meta.id: NodeInfo.build(n, by_node.get(n.meta.id, [])) for n in nodes}


def per_node(result: Plan) -> Counter[str]:
    return Counter(result.assignments.values())


class Harness:
    """Plans against NodeInfos it keeps up to date, recording every plan."""

    def __init__(
        self, nodes: Iterable[objects.Node], existing: Iterable[objects.Task] = (), *, seed: int = 1
    ) -> None:
        self.nodes = infos(nodes, existing)
        self.rng = random.Random(seed)
        self.now = 1000.0
        self.plans: list[Plan] = []

    def plan(self, pending: Sequence[objects.Task]) -> Plan:
        result = plan(self.nodes, pending, rng=self.rng, now=self.now)
        self.plans.append(result)
        for t in pending:
            node_id = result.assignments.get(t.meta.id)
            if node_id is not None:
                self.nodes[node_id].add_task(running(t, node_id))
        return result

    def counts(self, service: str = "web") -> dict[str, int]:
        return {i: info.by_service.get(service, 0) for i, info in self.nodes.items()}

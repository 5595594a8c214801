"""Properties of `plan` over generated clusters (hypothesis)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from api import objects_pb2 as objects
from manager.scheduler import NodeInfo, Pipeline, plan

from .harness import GIB, infos, node, per_node, running, task

pytestmark = pytest.mark.unit

ZONES = ["a", "b", "c", None]


@hs.composite
def clusters(draw: hs.DrawFn) -> list[objects.Node]:
    count = draw(hs.integers(min_value=0, max_value=8))
    nodes = []
    for i in range(count):
        zone = draw(hs.sampled_from(ZONES))
        nodes.append(
            node(
                f"n{i}",
                role=draw(hs.sampled_from([objects.WORKER, objects.MANAGER])),
                memory=draw(hs.integers(min_value=0, max_value=4)) * GIB,
                cpus=draw(hs.integers(min_value=0, max_value=4)),
                labels={} if zone is None else {"zone": zone},
                state=draw(hs.sampled_from([objects.READY, objects.READY, objects.DOWN])),
                availability=draw(hs.sampled_from([objects.ACTIVE, objects.ACTIVE, objects.DRAIN])),
            )
        )
    return nodes


@hs.composite
def workloads(draw: hs.DrawFn) -> list[objects.Task]:
    out: list[objects.Task] = []
    for s in range(draw(hs.integers(min_value=1, max_value=3))):
        constraints = draw(
            hs.lists(
                hs.sampled_from(
                    ["node.role==worker", "node.labels.zone!=a", "node.labels.zone==b"]
                ),
                max_size=2,
            )
        )
        spec = {
            "service": f"s{s}",
            "memory": draw(hs.integers(min_value=0, max_value=2)) * GIB,
            "cpus": draw(hs.integers(min_value=0, max_value=2)),
            "constraints": constraints,
            "max_replicas": draw(hs.integers(min_value=0, max_value=3)),
            "host_ports": draw(hs.sampled_from([[], [8080]])),
            "preferences": draw(hs.sampled_from([[], ["node.labels.zone"]])),
        }
        count = draw(hs.integers(min_value=1, max_value=12))
        out.extend(task(f"s{s}-{i}", **spec) for i in range(count))  # type: ignore[arg-type]
    return out


@settings(max_examples=150, deadline=None)
@given(nodes=clusters(), pending=workloads(), seed=hs.integers(min_value=0, max_value=1000))
def test_every_placement_passes_every_filter_at_its_turn(
    nodes: list[objects.Node], pending: list[objects.Task], seed: int
) -> None:
    result = plan(infos(nodes), pending, rng=random.Random(seed), now=0.0)
    assert result.assignments.keys() | result.unschedulable.keys() == {t.meta.id for t in pending}
    assert not result.assignments.keys() & result.unschedulable.keys()
    # Replay the plan in order on fresh NodeInfos: each node must pass the whole
    # pipeline just before it takes each task.
    replay = infos(nodes)
    pipeline = Pipeline()
    for t in pending:
        node_id = result.assignments.get(t.meta.id)
        if node_id is None:
            continue
        pipeline.set_task(t)
        assert pipeline.process(replay[node_id]), (t.meta.id, node_id)
        replay[node_id].add_task(running(t, node_id))
    for info in replay.values():
        assert info.available_memory >= 0 and info.available_cpus >= 0
        assert all(n <= 1 for n in info.ports.values())
        for t in pending:
            limit = t.spec.placement.max_replicas
            assert not limit or info.by_service.get(t.service_id, 0) <= limit


@settings(max_examples=100, deadline=None)
@given(
    count=hs.integers(min_value=1, max_value=12),
    replicas=hs.integers(min_value=0, max_value=60),
    existing=hs.lists(hs.integers(min_value=0, max_value=11), max_size=20),
    seed=hs.integers(min_value=0, max_value=1000),
)
def test_one_service_on_identical_nodes_is_balanced(
    count: int, replicas: int, existing: list[int], seed: int
) -> None:
    nodes = [node(f"n{i:02d}") for i in range(count)]
    # Existing tasks only on nodes that exist; the plan must even things out when it can.
    old = [running(task(f"old{j}"), f"n{i % count:02d}") for j, i in enumerate(existing)]
    infos_ = infos(nodes, old)
    result = plan(
        infos_, [task(f"t{i}") for i in range(replicas)], rng=random.Random(seed), now=0.0
    )
    assert len(result.assignments) == replicas
    totals = {i: infos_[i].by_service.get("web", 0) + per_node(result)[i] for i in infos_}
    if not old:
        assert max(totals.values()) - min(totals.values()) <= 1
    else:
        # New tasks only ever go where the count is lowest (water-filling): no node that
        # took one ends above the final minimum + 1.
        floor = min(totals.values())
        assert all(totals[i] <= floor + 1 for i in per_node(result))


def test_nodeinfo_is_not_shared_by_clone() -> None:
    info = NodeInfo.build(node("n1"), [running(task("a"), "n1")])
    copy = info.clone()
    copy.add_task(running(task("b"), "n1"))
    assert info.tasks.keys() == {"a"} and copy.tasks.keys() == {"a", "b"}

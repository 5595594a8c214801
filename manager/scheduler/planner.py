"""`plan`: the scheduler's decisions, as a pure function of a snapshot.

Identical tasks (same service, spec version, spec and endpoint) form a group, judged
together: the filters run once per node for the group, then its tasks are placed one by
one by the spread strategy, each placement updating the planner's private copy of the
node, so a group of 100 replicas spreads as evenly as 100 groups of one would, at a
fraction of the cost. Tasks already bound to a node (global services) are only checked
against that node. Groups are planned in the order their first task appears, and later
groups see earlier groups' placements.

The caller's NodeInfos are never changed: a node is copied the first time the plan puts
something on it (copy on write), so planning costs nothing for untouched nodes.

Usage::

    result = plan(infos, pending, rng=random.Random(7), now=clock())
    result.assignments    # {task id: node id}
    result.unschedulable  # {task id: "no suitable node (insufficient memory on 2 nodes)"}
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from api import objects_pb2 as objects
from api.errors import InvalidArgument
from manager.scheduler import spread
from manager.scheduler.constraints import label_name
from manager.scheduler.nodeinfo import NodeInfo
from manager.scheduler.pipeline import NO_SUITABLE_NODE, Pipeline


@dataclass
class Plan:
    """Where each task goes, or why it cannot go anywhere."""

    assignments: dict[str, str] = field(default_factory=dict)  # task id -> node id
    unschedulable: dict[str, str] = field(default_factory=dict)  # task id -> reason


class _Workspace:
    """The caller's nodes, with private copies of those the plan has changed."""

    def __init__(self, nodes: Mapping[str, NodeInfo]) -> None:
        self._base = nodes
        self._owned: dict[str, NodeInfo] = {}

    def get(self, node_id: str) -> NodeInfo | None:
        return self._owned.get(node_id) or self._base.get(node_id)

    def own(self, node_id: str) -> NodeInfo:
        info = self._owned.get(node_id)
        if info is None:
            info = self._owned[node_id] = self._base[node_id].clone()
        return info

    def all(self) -> list[NodeInfo]:
        return [self._owned.get(i) or info for i, info in self._base.items()]


def plan(
    nodes: Mapping[str, NodeInfo],
    tasks: Sequence[objects.Task],
    *,
    rng: random.Random,
    now: float,
) -> Plan:
    """Place `tasks` on `nodes`; see the module docstring. Pure: same inputs and rng
    state give the same plan, and neither `nodes` nor `tasks` is changed."""
    result = Plan()
    work = _Workspace(nodes)
    pipeline = Pipeline()
    for group in group_tasks(tasks):
        try:
            pipeline.set_task(group[0])
        except InvalidArgument as e:  # a constraint the control API would have refused
            for task in group:
                result.unschedulable[task.meta.id] = f"{NO_SUITABLE_NODE} ({e.message})"
            continue
        bound = [t for t in group if t.node_id]
        free = [t for t in group if not t.node_id]
        for task in bound:
            _place_bound(task, work=work, pipeline=pipeline, result=result)
        if free:
            _place_free(free, work=work, pipeline=pipeline, rng=rng, now=now, result=result)
    return result


def group_tasks(tasks: Sequence[objects.Task]) -> list[list[objects.Task]]:
    """Identical tasks together, groups in order of first appearance."""
    by_version: dict[tuple[str, int], list[list[objects.Task]]] = {}
    groups: list[list[objects.Task]] = []
    for task in tasks:
        candidates = by_version.setdefault((task.service_id, task.spec_version), [])
        for group in candidates:
            first = group[0]
            # Nearly always the first candidate matches: a service version has one spec.
            if first.spec == task.spec and first.endpoint == task.endpoint:
                group.append(task)
                break
        else:
            candidates.append([task])
            groups.append(candidates[-1])
    return groups


def _place_bound(task: objects.Task, *, work: _Workspace, pipeline: Pipeline, result: Plan) -> None:
    pipeline.reset()  # the explanation is about this task's one node only
    info = work.get(task.node_id)
    if info is not None and pipeline.process(info):
        work.own(task.node_id).add_task(task)
        result.assignments[task.meta.id] = task.node_id
    else:
        result.unschedulable[task.meta.id] = pipeline.explain()


def _place_free(
    group: list[objects.Task],
    *,
    work: _Workspace,
    pipeline: Pipeline,
    rng: random.Random,
    now: float,
    result: Plan,
) -> None:
    first = group[0]
    pipeline.reset()
    candidates = work.all()
    feasible = {info.node_id for info in candidates if pipeline.process(info)}
    try:
        labels = [label_name(p) for p in first.spec.placement.preferences]
    except InvalidArgument:
        labels = []  # an unusable preference is ignored, as swarmkit ignores unknown ones
    tree = spread.build(
        candidates,
        feasible=feasible,
        labels=labels,
        task=first,
        pipeline=pipeline,
        own=work.own,
        rng=rng,
        now=now,
    )
    reason = ""
    for task in group:
        node_id = None if reason else tree.place(task)
        if node_id is not None:
            result.assignments[task.meta.id] = node_id
            continue
        # Once nothing fits, nothing will for the rest of this group.
        reason = reason or pipeline.explain()
        result.unschedulable[task.meta.id] = reason

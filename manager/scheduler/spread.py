"""The spread strategy: of the nodes that passed the filters, which takes the next task.

A `Leaf` keeps its feasible nodes in a heap ordered by

    (penalty, tasks of this service, tasks in total, random)

so placing n tasks over m nodes costs O(n log m), not O(n * m): only the node that just
took a task changes its key, and it goes back into the heap with the new one. A node
penalised for recent failures of this service version sorts after every healthy one.
Before a node takes another task it is re-checked by the filters its own placements can
change (resources, host ports, replicas per node); a node that fails is dropped.

`Branches` spread over placement preferences (`node.labels.zone`): nodes are split by
the label's value (nodes without it form a branch of their own), and each task goes to
the branch that holds the fewest tasks of the service so far (existing ones included),
recursively, down to a leaf. A branch with no room left is closed for the group.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sequence
from typing import Protocol

from api import objects_pb2 as objects
from manager.scheduler.nodeinfo import Footprint, NodeInfo
from manager.scheduler.pipeline import Pipeline

# Hands out the node the planner may change (a private copy of the caller's NodeInfo).
Own = Callable[[str], NodeInfo]
_NodeKey = tuple[int, int, int, float, str]


class Spread(Protocol):
    def place(self, task: objects.Task) -> str | None:
        """Put `task` on the best node and return its id; None when nothing fits."""


class Leaf:
    """Nodes of one branch (or of the whole cluster without preferences)."""

    def __init__(
        self,
        feasible: Sequence[NodeInfo],
        *,
        task: objects.Task,
        pipeline: Pipeline,
        own: Own,
        rng: random.Random,
        now: float,
    ) -> None:
        self._pipeline = pipeline
        self._own = own
        self._rng = rng
        self._service_id = task.service_id
        self._footprint = Footprint.of(task)  # the same for every task of the group
        self._penalty = {
            info.node_id: info.penalty(task.service_id, task.spec_version, now=now)
            for info in feasible
        }
        self._heap = [self._key(info) for info in feasible]
        heapq.heapify(self._heap)

    def place(self, task: objects.Task) -> str | None:
        while self._heap:
            node_id = self._heap[0][-1]
            info = self._own(node_id)
            if self._pipeline.has_dynamic and not self._pipeline.recheck(info):
                heapq.heappop(self._heap)  # full for this group: never offered again
                continue
            info.add_task(task, footprint=self._footprint)
            heapq.heapreplace(self._heap, self._key(info))
            return node_id
        return None

    def _key(self, info: NodeInfo) -> _NodeKey:
        return (
            self._penalty[info.node_id],
            info.by_service.get(self._service_id, 0),
            len(info.tasks),
            self._rng.random(),  # ties go to a random node, reproducibly for a seeded rng
            info.node_id,
        )


class Branches:
    """One level of the preference tree: children split by one label's value."""

    def __init__(self, children: Sequence[tuple[int, Spread]], *, rng: random.Random) -> None:
        self._rng = rng
        # (tasks of the service in the branch, random tie-break, position, branch)
        self._heap = [(count, rng.random(), i, child) for i, (count, child) in enumerate(children)]
        heapq.heapify(self._heap)

    def place(self, task: objects.Task) -> str | None:
        while self._heap:
            count, _, i, child = self._heap[0]
            node_id = child.place(task)
            if node_id is None:
                heapq.heappop(self._heap)  # no room left in this branch
                continue
            heapq.heapreplace(self._heap, (count + 1, self._rng.random(), i, child))
            return node_id
        return None


def build(
    nodes: Sequence[NodeInfo],
    *,
    feasible: set[str],
    labels: Sequence[str],
    task: objects.Task,
    pipeline: Pipeline,
    own: Own,
    rng: random.Random,
    now: float,
) -> Spread:
    """The spread tree over `nodes` for `task`'s group; only `feasible` ones take tasks,
    but tasks on every node count towards its branch's share."""
    if not labels:
        fit = [n for n in nodes if n.node_id in feasible]
        return Leaf(fit, task=task, pipeline=pipeline, own=own, rng=rng, now=now)
    label, rest = labels[0], labels[1:]
    split: dict[str | None, list[NodeInfo]] = {}
    for info in nodes:
        split.setdefault(info.node.spec.labels.get(label), []).append(info)
    children: list[tuple[int, Spread]] = []
    for value in sorted(split, key=lambda v: (v is None, v or "")):
        members = split[value]
        count = sum(n.by_service.get(task.service_id, 0) for n in members)
        child = build(
            members,
            feasible=feasible,
            labels=rest,
            task=task,
            pipeline=pipeline,
            own=own,
            rng=rng,
            now=now,
        )
        children.append((count, child))
    return Branches(children, rng=rng)

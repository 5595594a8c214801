"""Replicated services: `replicas` live slots, each with one live task.

Slots are numbered from 1. Scaling up fills the lowest free numbers; scaling down
shuts down whole slots, chosen as swarmkit does so that what is left is balanced:
tasks that are the n-th copy of the service on their node go first (highest n first;
tasks not yet placed before all of them), non-running before running, and among equals
the highest slot. Slots held by a running update and dead slots (restart declined)
count as filled and are never picked here.
"""

from __future__ import annotations

import math
from collections import Counter

from api import objects_pb2 as objects
from manager.orchestrator.common import Ctx, SlotKey, group_live, is_dirty, new_task, sort_key
from manager.orchestrator.plan import Plan


def reconcile_replicated(ctx: Ctx, plan: Plan, *, held: set[SlotKey], dead: set[SlotKey]) -> None:
    by_slot = group_live(plan.tasks)
    dedupe(ctx, plan, by_slot, held)
    replicas = ctx.service.spec.replicas
    filled = set(by_slot) | held
    if len(filled) > replicas:
        for key in removal_order(by_slot, held)[: len(filled) - replicas]:
            for task in by_slot.pop(key):
                plan.set_desired(task, objects.TASK_SHUTDOWN)
    fill_slots(ctx, plan, taken=set(by_slot) | held | dead, count=replicas)


def fill_slots(
    ctx: Ctx,
    plan: Plan,
    *,
    taken: set[SlotKey],
    count: int,
    desired: objects.TaskState.ValueType = objects.TASK_RUNNING,
) -> None:
    """Create tasks in the lowest free slots until `count` slots are taken."""
    missing = count - len(taken)
    slot = 0
    while missing > 0:
        slot += 1
        if slot not in taken:
            plan.create(new_task(ctx, slot=slot, desired=desired))
            missing -= 1


def dedupe(
    ctx: Ctx, plan: Plan, by_slot: dict[SlotKey, list[objects.Task]], held: set[SlotKey]
) -> None:
    """Keep one live task per slot that no update holds (e.g. after a leader change in
    the middle of a start-first update): the current spec, running, newest wins."""
    for key, tasks in by_slot.items():
        if len(tasks) < 2 or key in held:
            continue
        tasks.sort(
            key=lambda t: (
                not is_dirty(t, ctx.service),
                t.status.state == objects.TASK_RUNNING,
                t.meta.created_at,
            )
        )
        for task in tasks[:-1]:
            plan.set_desired(task, objects.TASK_SHUTDOWN)
        del tasks[:-1]


def removal_order(by_slot: dict[SlotKey, list[objects.Task]], held: set[SlotKey]) -> list[SlotKey]:
    """The slots to shut down first when scaling down (see the module docstring)."""
    candidates = [k for k in by_slot if k not in held]

    def running(key: SlotKey) -> bool:
        return any(t.status.state == objects.TASK_RUNNING for t in by_slot[key])

    # Number each node's copies, running ones first, so that the extra copies on crowded
    # nodes (and the not-yet-running ones) get the high numbers.
    per_node: Counter[str] = Counter()
    copy_number: dict[SlotKey, float] = {}
    for key in sorted(candidates, key=lambda k: (not running(k), sort_key(k))):
        nodes = {t.node_id for t in by_slot[key]}
        node = nodes.pop() if len(nodes) == 1 else ""
        if node:
            per_node[node] += 1
            copy_number[key] = per_node[node]
        else:
            copy_number[key] = math.inf
    return sorted(
        candidates,
        key=lambda k: (copy_number[k], not running(k), sort_key(k)),
        reverse=True,
    )

"""The task reaper: bounded history per slot, and the tasks of deleted services.

History: a slot (replicated: service + slot; global: service + node) keeps at most
`cluster.spec.task_history_limit` tasks (0 or unset: 5, docker's default); the oldest
that are finished go first. Finished = desired SHUTDOWN or beyond, and observed
terminal, or on a node that no longer exists (no agent will ever report it ended).

Deleted services (`service rm` deletes the object; `pending_delete` is read the same
way): every task of theirs is set desired REMOVE at once, and deleted when it is
terminal, when its node is DOWN or gone, or when it was never assigned to a node.
"""

from __future__ import annotations

from collections.abc import Sequence

from api import objects_pb2 as objects
from api import tasks as api_tasks
from manager.orchestrator.common import SlotKey, node_gone, slot_key
from manager.orchestrator.plan import Plan

DEFAULT_HISTORY: int = 5


def history_limit(clusters: Sequence[objects.Cluster]) -> int:
    limit = clusters[0].spec.task_history_limit if clusters else 0
    return int(limit) if limit > 0 else DEFAULT_HISTORY


def reap_history(plan: Plan, nodes: dict[str, objects.Node], limit: int) -> None:
    by_slot: dict[SlotKey, list[objects.Task]] = {}
    for task in plan.tasks.values():
        by_slot.setdefault(slot_key(task), []).append(task)
    for tasks in by_slot.values():
        excess = len(tasks) - limit
        if excess <= 0:
            continue
        tasks.sort(key=lambda t: (t.meta.created_at, t.status.timestamp, t.meta.id))
        for task in tasks:
            if excess == 0:
                break
            if _finished(task, nodes):
                plan.delete(task)
                excess -= 1


def _finished(task: objects.Task, nodes: dict[str, objects.Node]) -> bool:
    if task.desired_state < objects.TASK_SHUTDOWN:
        return False
    return api_tasks.is_terminal(task.status.state) or (
        bool(task.node_id) and task.node_id not in nodes
    )


def reap_orphans(plan: Plan, nodes: dict[str, objects.Node]) -> None:
    """The tasks of a service that is gone: REMOVE them, delete what nobody runs."""
    for task in list(plan.tasks.values()):
        unassigned = not task.node_id
        if (
            unassigned
            or api_tasks.is_terminal(task.status.state)
            or node_gone(nodes.get(task.node_id))
        ):
            plan.delete(task)
        else:
            plan.set_desired(task, objects.TASK_REMOVE)

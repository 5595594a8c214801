"""Global services (and global jobs): one task on every eligible node.

A node takes a new task when it exists, is ACTIVE, not DOWN and matches the service's
placement constraints (parsed by manager.scheduler.constraints, so the orchestrator and
the scheduler agree on which nodes fit). PAUSE keeps the tasks a node has; DRAIN, a
constraint the node no longer matches (labels changed) and removal shut them down.
Tasks on a DOWN node are left alone: they come back with it. A global job's node is
done once a task of the current iteration COMPLETEd there.
"""

from __future__ import annotations

from api import objects_pb2 as objects
from manager.orchestrator.common import (
    Ctx,
    SlotKey,
    group_live,
    is_job,
    may_keep,
    new_task,
    run_state,
    takes_new,
)
from manager.orchestrator.plan import Plan
from manager.orchestrator.replicated import dedupe


def reconcile_global(ctx: Ctx, plan: Plan, *, held: set[SlotKey], dead: set[SlotKey]) -> None:
    service = ctx.service
    by_node = group_live(plan.tasks)
    dedupe(ctx, plan, by_node, held)
    for key, tasks in list(by_node.items()):
        node = ctx.nodes.get(str(key))
        if not may_keep(node, service):
            for task in tasks:
                plan.set_desired(task, objects.TASK_SHUTDOWN)
            del by_node[key]
    done = _completed_nodes(ctx, plan) if is_job(service) else set()
    taken = set(by_node) | held | dead | done
    for node_id, node in sorted(ctx.nodes.items()):
        if node_id not in taken and takes_new(node, service):
            plan.create(new_task(ctx, node_id=node_id, desired=run_state(service)))


def _completed_nodes(ctx: Ctx, plan: Plan) -> set[SlotKey]:
    iteration = ctx.service.job_iteration
    return {
        t.node_id
        for t in plan.tasks.values()
        if t.job_iteration == iteration and t.status.state == objects.TASK_COMPLETE
    }

"""Jobs: tasks that run to completion (desired COMPLETE), counted per job iteration.

A replicated job wants `replicas` completions, with at most `max_concurrent` (0 = all)
tasks live at once; each task has its own slot, and a failed one is restarted in its
slot by the restart supervisor (on-failure). A global job is global_.py with "done"
nodes. `service update` (or `--force`) of a job bumps its job_iteration: tasks of older
iterations are shut down if still live and no longer count.
"""

from __future__ import annotations

from api import objects_pb2 as objects
from manager.orchestrator.common import Ctx, SlotKey, is_live
from manager.orchestrator.plan import Plan
from manager.orchestrator.replicated import fill_slots


def retire_old_iterations(ctx: Ctx, plan: Plan) -> None:
    iteration = ctx.service.job_iteration
    for task in plan.live():
        if task.job_iteration != iteration:
            plan.set_desired(task, objects.TASK_SHUTDOWN)


def reconcile_replicated_job(ctx: Ctx, plan: Plan, *, dead: set[SlotKey]) -> None:
    service = ctx.service
    current = [t for t in plan.tasks.values() if t.job_iteration == service.job_iteration]
    completed: set[SlotKey] = {t.slot for t in current if t.status.state == objects.TASK_COMPLETE}
    live: set[SlotKey] = {t.slot for t in current if is_live(t)}
    live -= completed
    dead = dead - completed - live
    # A dead slot (restart declined) is a completion that will never come: it must not
    # be handed to a fresh task, or the policy would be bypassed.
    remaining = service.spec.replicas - len(completed) - len(dead)
    concurrent = service.spec.max_concurrent or service.spec.replicas
    wanted = min(concurrent, remaining)
    if wanted > len(live):
        taken = live | completed | dead
        fill_slots(
            ctx,
            plan,
            taken=taken,
            count=len(taken) + wanted - len(live),
            desired=objects.TASK_COMPLETE,
        )

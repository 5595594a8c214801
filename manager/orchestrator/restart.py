"""The restart supervisor: replaces tasks whose container ended while still wanted.

Per service it remembers, in memory only (a new leader starts afresh, as swarmkit's):
- restart attempts per slot, for `max_attempts` within `window`; reset by a new spec;
- when each replacement waiting in desired READY is due to run (`delay` after the old
  task ended); READY tasks it does not know (a new leader) are due `delay` after their
  creation, at once if that has passed;
- *dead slots*: where the policy declined a restart. They count as filled, so that the
  slot reconciler does not undo the policy, until the spec, the replica count or the
  job iteration changes (docker refills them on the next service update).

Tasks on a node that is DOWN, drained or removed are replaced at once, in the same
slot and desired RUNNING, and that is not an attempt; global tasks on a DOWN node are
left alone (they come back with their node), drained ones are the global
reconciler's. A replacement is made only if the slot holds no other live task (a
start-first update may have put one there).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from api import objects_pb2 as objects
from api import tasks as api_tasks
from manager.orchestrator.common import (
    Ctx,
    SlotKey,
    group_live,
    has_ended,
    is_global,
    is_job,
    is_live,
    new_task,
    node_lost,
    run_state,
    slot_key,
    takes_new,
)
from manager.orchestrator.plan import Plan

DeadStamp = tuple[int, int, int]  # spec_version, replicas, job_iteration


@dataclass
class _Attempts:
    spec_version: int
    times: deque[float] = field(default_factory=deque)


def restart_delay(service: objects.Service) -> float:
    policy = service.spec.task.restart
    return policy.delay if policy.HasField("delay") else api_tasks.DEFAULT_RESTART_DELAY


def _condition(service: objects.Service) -> objects.RestartCondition.ValueType:
    condition = service.spec.task.restart.condition
    # Jobs run to completion: "any" would rerun a finished task forever; docker's
    # default for jobs is on-failure, and the control API stores ANY as the default.
    if is_job(service) and condition == objects.RESTART_ANY:
        return objects.RESTART_ON_FAILURE
    return condition


def _stamp(service: objects.Service) -> DeadStamp:
    return (service.spec_version, service.spec.replicas, service.job_iteration)


class RestartSupervisor:
    """One service's restart memory and decisions."""

    def __init__(self) -> None:
        self._attempts: dict[SlotKey, _Attempts] = {}
        self._due: dict[str, float] = {}  # READY task id -> monotonic time to run it
        self._dead: dict[SlotKey, DeadStamp] = {}

    def dead_slots(self, service: objects.Service) -> set[SlotKey]:
        stamp = _stamp(service)
        self._dead = {k: s for k, s in self._dead.items() if s == stamp}
        return set(self._dead)

    # ---- replacing ended tasks --------------------------------------------------------

    def supervise(self, ctx: Ctx, plan: Plan) -> None:
        by_slot = group_live(plan.tasks)
        for task in plan.live():
            node = ctx.nodes.get(task.node_id) if task.node_id else None
            if task.node_id and not is_global(ctx.service) and node_lost(node):
                self._replace_lost(ctx, plan, task, by_slot)
            elif has_ended(task):
                self._restart(ctx, plan, task, node, by_slot)

    def _replace_lost(
        self, ctx: Ctx, plan: Plan, task: objects.Task, by_slot: dict[SlotKey, list[objects.Task]]
    ) -> None:
        plan.set_desired(task, objects.TASK_SHUTDOWN)
        if _others_live(task, by_slot):
            return
        new = plan.create(new_task(ctx, slot=task.slot, desired=run_state(ctx.service)))
        by_slot.setdefault(slot_key(new), []).append(new)

    def _restart(
        self,
        ctx: Ctx,
        plan: Plan,
        task: objects.Task,
        node: objects.Node | None,
        by_slot: dict[SlotKey, list[objects.Task]],
    ) -> None:
        plan.set_desired(task, objects.TASK_SHUTDOWN)
        self._due.pop(task.meta.id, None)
        if _others_live(task, by_slot):
            return
        service = ctx.service
        if is_global(service) and not takes_new(node, service):
            return  # the global reconciler places one when the node takes tasks again
        key = slot_key(task)
        if not self._allowed(ctx, task, key):
            self._dead[key] = _stamp(service)
            return
        self._record(ctx, key)
        node_id = task.node_id if is_global(service) else ""  # replicated: scheduled anew
        new = plan.create(
            new_task(ctx, slot=task.slot, node_id=node_id, desired=objects.TASK_READY)
        )
        by_slot.setdefault(key, []).append(new)
        delay = restart_delay(service)
        ended = task.status.timestamp or ctx.wall
        self._due[new.meta.id] = ctx.now + min(max(ended + delay - ctx.wall, 0.0), delay)

    def _allowed(self, ctx: Ctx, task: objects.Task, key: SlotKey) -> bool:
        service = ctx.service
        condition = _condition(service)
        if condition == objects.RESTART_NONE:
            return False
        clean = task.status.state == objects.TASK_COMPLETE and task.status.container.exit_code == 0
        if condition == objects.RESTART_ON_FAILURE and clean:
            return False
        policy = service.spec.task.restart
        if not policy.max_attempts:
            return True
        attempts = self._attempts.get(key)
        if attempts is None or attempts.spec_version != service.spec_version:
            return True
        recent = [t for t in attempts.times if not policy.window or ctx.now - t <= policy.window]
        return len(recent) < policy.max_attempts

    def _record(self, ctx: Ctx, key: SlotKey) -> None:
        service = ctx.service
        attempts = self._attempts.get(key)
        if attempts is None or attempts.spec_version != service.spec_version:
            attempts = self._attempts[key] = _Attempts(service.spec_version)
        attempts.times.append(ctx.now)
        # Only the last max_attempts times can decide anything.
        while len(attempts.times) > max(service.spec.task.restart.max_attempts, 1):
            attempts.times.popleft()

    # ---- running replacements when their delay is over ------------------------------------

    def promote(self, ctx: Ctx, plan: Plan) -> float | None:
        """Move due READY tasks to run; the next time one is due, if any."""
        delay = restart_delay(ctx.service)
        waiting: dict[str, float] = {}
        for task in plan.live():
            if task.desired_state != objects.TASK_READY:
                continue
            due = self._due.get(task.meta.id)
            if due is None:  # made by an earlier leader: its delay ran from its creation
                due = ctx.now + min(max(task.meta.created_at + delay - ctx.wall, 0.0), delay)
            if due <= ctx.now:
                plan.set_desired(task, run_state(ctx.service))
            else:
                waiting[task.meta.id] = due
        self._due = waiting
        return min(waiting.values(), default=None)


def _others_live(task: objects.Task, by_slot: dict[SlotKey, list[objects.Task]]) -> bool:
    return any(t is not task and is_live(t) for t in by_slot.get(slot_key(task), []))

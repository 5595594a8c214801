"""The rolling updater: replaces tasks of an older spec, a batch of slots at a time.

One `Updater` per service and spec_version, a state machine stepped by each pass over
the service (events and timers), never a thread of its own. A newer spec_version
supersedes it: the orchestrator drops it, and what it left half done is finished by
the slot reconciler (an emptied slot is refilled) or by the next updater.

A batch is `parallelism` dirty slots (unset = 1, 0 = all). STOP_FIRST shuts the old
tasks down, waits until they ended (or their node is DOWN or gone), then creates the
new task; START_FIRST creates the new task first and shuts the old ones down once it
is RUNNING. `delay` separates batches. The slots of the batch in flight are *held*:
the slot reconciler neither refills nor dedupes them.

Failures (docker's rule): a task this updater created that ends other than COMPLETE
before it ran, or within `monitor` seconds of running. When failures / tasks created so
far > max_failure_ratio, failure_action decides: PAUSE (PAUSED, or ROLLBACK_PAUSED in a
rollback), CONTINUE, or ROLLBACK (the spec swap `service rollback` makes, then the
rollback runs with the spec's `rollback` config). Done when no dirty slot is left and
the last new tasks ran for `monitor` seconds: COMPLETED / ROLLBACK_COMPLETED.
"""

from __future__ import annotations

from api import objects_pb2 as objects
from api import tasks as api_tasks
from manager.orchestrator.common import (
    Ctx,
    SlotKey,
    group_live,
    is_dirty,
    is_global,
    is_live,
    new_task,
    node_gone,
    sort_key,
    takes_new,
)
from manager.orchestrator.plan import Plan, ServiceChange

US = objects.UpdateStatus
ACTIVE_STATES = (US.UPDATING, US.ROLLBACK_STARTED)
PAUSED_STATES = (US.PAUSED, US.ROLLBACK_PAUSED)


class Updater:
    """One service's update to one spec_version."""

    def __init__(self, service: objects.Service, now: float) -> None:
        self.version = service.spec_version
        self.rollback = service.update_status.state == US.ROLLBACK_STARTED
        config = service.spec.rollback if self.rollback else service.spec.update
        parallelism = config.parallelism if config.HasField("parallelism") else None
        self.parallelism = api_tasks.DEFAULT_PARALLELISM if parallelism is None else parallelism
        self.monitor = config.monitor if config.HasField("monitor") else api_tasks.DEFAULT_MONITOR
        self.delay = config.delay
        self.order = config.order
        self.action = config.failure_action
        self.max_ratio = config.max_failure_ratio
        self.inflight: dict[SlotKey, set[str]] = {}  # slot -> old tasks awaited (stop-first)
        self.watched: dict[str, float | None] = {}  # new task -> when seen RUNNING
        self.failed: set[str] = set()
        self.created = 0  # new tasks so far: the failure ratio's denominator
        self.next_batch_at = now
        self.stopped = False
        self.completed = False

    def held(self) -> set[SlotKey]:
        return set() if self.stopped or self.completed else set(self.inflight)

    # ---- failures -----------------------------------------------------------------------

    def check_failures(self, ctx: Ctx, plan: Plan) -> None:
        """Before the restart supervisor runs, so that it sees ended tasks as they are."""
        for task_id, since in list(self.watched.items()):
            task = plan.tasks.get(task_id)
            if task is None:
                del self.watched[task_id]
                continue
            state = task.status.state
            if state == objects.TASK_RUNNING and since is None:
                self.watched[task_id] = ctx.now
            elif self._failed(task, since, ctx.now) and not self.stopped:
                self.failed.add(task_id)
                self._on_failure(ctx, plan, task_id)

    def _failed(self, task: objects.Task, since: float | None, now: float) -> bool:
        state = task.status.state
        return (
            task.meta.id not in self.failed
            and is_live(task)  # not one we (or a scale-down) shut down
            and api_tasks.is_terminal(state)
            and state != objects.TASK_COMPLETE
            and (since is None or now - since <= self.monitor)
        )

    def _on_failure(self, ctx: Ctx, plan: Plan, task_id: str) -> None:
        if len(self.failed) / max(self.created, 1) <= self.max_ratio:
            return
        if self.action == objects.FAILURE_CONTINUE:
            return
        self.stopped = True
        what = "rollback" if self.rollback else "update"
        if self.action == objects.FAILURE_ROLLBACK and not self.rollback:
            message = f"update rolled back due to failure or early termination of task {task_id}"
            plan.service_change = _rollback(self.version, message, ctx.wall)
        else:
            message = f"{what} paused due to failure or early termination of task {task_id}"
            state = US.ROLLBACK_PAUSED if self.rollback else US.PAUSED
            plan.service_change = _set_status(self.version, state, message, ctx.wall)

    # ---- progress -------------------------------------------------------------------------

    def advance(self, ctx: Ctx, plan: Plan) -> float | None:
        """Move the update on; the time it next needs a pass, if a timer must wake it."""
        if self.stopped or self.completed:
            return None
        live = group_live(plan.tasks)
        for key in list(self.inflight):
            if self._slot_done(ctx, plan, key, live.get(key, [])):
                del self.inflight[key]
                if not self.inflight:
                    self.next_batch_at = ctx.now + self.delay
        if self.inflight:
            return None  # task events wake us
        dirty = self._dirty_slots(ctx, live)
        if dirty:
            if ctx.now < self.next_batch_at:
                return self.next_batch_at
            for key in dirty[: self.parallelism or len(dirty)]:
                self._start_slot(ctx, plan, key, live[key])
            return None
        return self._finish(ctx, plan)

    def _dirty_slots(self, ctx: Ctx, live: dict[SlotKey, list[objects.Task]]) -> list[SlotKey]:
        service = ctx.service
        keys = [k for k, ts in live.items() if any(is_live(t) and is_dirty(t, service) for t in ts)]
        if is_global(service):
            # A node that takes no new task (DOWN, paused) is updated when it does.
            keys = [k for k in keys if takes_new(ctx.nodes.get(str(k)), service)]
        return sorted(keys, key=sort_key)

    def _start_slot(self, ctx: Ctx, plan: Plan, key: SlotKey, tasks: list[objects.Task]) -> None:
        tasks = [t for t in tasks if is_live(t)]  # this pass may have shut some down
        old = [t for t in tasks if is_dirty(t, ctx.service)]
        if self.order == objects.START_FIRST or len(old) < len(tasks):
            self.inflight[key] = set()
            if len(old) == len(tasks):
                self._create(ctx, plan, key)
            return
        for task in old:
            plan.set_desired(task, objects.TASK_SHUTDOWN)
        self.inflight[key] = {t.meta.id for t in old}
        self._slot_done(ctx, plan, key, [])  # the old ones may have ended already

    def _slot_done(self, ctx: Ctx, plan: Plan, key: SlotKey, tasks: list[objects.Task]) -> bool:
        awaited = self.inflight[key]
        if awaited:  # stop-first: the new task starts once the old ones ended
            if not all(self._ended(ctx, plan.tasks.get(i)) for i in awaited):
                return False
            self.inflight[key] = set()
            if not any(is_live(t) for t in tasks):
                self._create(ctx, plan, key)
            return False
        fresh = [t for t in tasks if not is_dirty(t, ctx.service)]
        if not fresh:
            return not tasks  # emptied (a new task failed, no restart): nothing to wait for
        if not any(t.status.state == objects.TASK_RUNNING for t in fresh):
            return False
        for task in tasks:
            if is_dirty(task, ctx.service):
                plan.set_desired(task, objects.TASK_SHUTDOWN)
        return True

    @staticmethod
    def _ended(ctx: Ctx, task: objects.Task | None) -> bool:
        return (
            task is None
            or api_tasks.is_terminal(task.status.state)
            or (bool(task.node_id) and node_gone(ctx.nodes.get(task.node_id)))
        )

    def _create(self, ctx: Ctx, plan: Plan, key: SlotKey) -> None:
        task = new_task(ctx, slot=key) if isinstance(key, int) else new_task(ctx, node_id=key)
        plan.create(task)
        self.watched[task.meta.id] = None
        self.created += 1

    def _finish(self, ctx: Ctx, plan: Plan) -> float | None:
        starts = [since for i, since in self.watched.items() if i in plan.tasks]
        if any(since is None for i, since in self.watched.items() if _live(plan, i)):
            return None  # a new task has yet to run
        end = max((s + self.monitor for s in starts if s is not None), default=ctx.now)
        if ctx.now < end:
            return end
        self.completed = True
        state = ctx.service.update_status.state
        if state == US.UPDATING:
            plan.service_change = _set_status(
                self.version, US.COMPLETED, "update completed", ctx.wall
            )
        elif state == US.ROLLBACK_STARTED:
            plan.service_change = _set_status(
                self.version, US.ROLLBACK_COMPLETED, "rollback completed", ctx.wall
            )
        return None


def _live(plan: Plan, task_id: str) -> bool:
    task = plan.tasks.get(task_id)
    return task is not None and is_live(task) and not api_tasks.is_terminal(task.status.state)


def _set_status(
    version: int, state: objects.UpdateStatus.State.ValueType, message: str, wall: float
) -> ServiceChange:
    def change(service: objects.Service) -> bool:
        if service.spec_version != version or service.update_status.state == state:
            return False  # superseded by a newer spec, or already written
        service.update_status.state = state
        service.update_status.message = message
        if state in (US.COMPLETED, US.ROLLBACK_COMPLETED):
            service.update_status.completed_at = wall
        return True

    return change


def _rollback(version: int, message: str, wall: float) -> ServiceChange:
    """What `service rollback` does (manager.servicecontrol), done by the updater."""

    def change(service: objects.Service) -> bool:
        if service.spec_version != version:
            return False
        if not service.HasField("previous_spec"):  # nothing to return to: pause instead
            return _set_status(version, US.PAUSED, message, wall)(service)
        current = objects.ServiceSpec()
        current.CopyFrom(service.spec)
        service.spec.CopyFrom(service.previous_spec)
        service.previous_spec.CopyFrom(current)
        service.spec_version += 1
        service.update_status.CopyFrom(
            US(state=US.ROLLBACK_STARTED, started_at=wall, message=message)
        )
        return True

    return change

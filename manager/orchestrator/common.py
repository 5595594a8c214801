"""What every orchestrator shares: slot keys, liveness, dirtiness, eligibility, new tasks.

A task's *slot key* is its identity within the service: the slot number for replicated
services (and replicated jobs), the node id for global ones. A task is *live* while the
orchestrator still wants it to run (desired READY or RUNNING, or a job's COMPLETE not
yet reached); at most one live task per slot is the invariant every module keeps,
except for a start-first update, whose updater holds the slot meanwhile.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TypeAlias

from api import objects_pb2 as objects
from api import tasks as api_tasks
from api.errors import InvalidArgument
from manager.ids import new_id
from manager.scheduler.constraints import Constraint, parse_constraints

SlotKey: TypeAlias = int | str
State: TypeAlias = objects.TaskState.ValueType

_JOBS = (objects.REPLICATED_JOB, objects.GLOBAL_JOB)
_GLOBALS = (objects.GLOBAL, objects.GLOBAL_JOB)


@dataclass
class Ctx:
    """One reconciliation's inputs: the service and nodes as read, and the clocks."""

    service: objects.Service
    nodes: dict[str, objects.Node] = field(default_factory=dict)
    now: float = 0.0  # the injected monotonic clock: timers
    wall: float = 0.0  # the injected wall clock: timestamps written to the store
    _template: objects.Task | None = field(default=None, repr=False)

    def template(self) -> objects.Task:
        """What every new task of this pass starts from (never handed out itself)."""
        if self._template is None:
            self._template = _template(self.service, self.wall)
        return self._template


def is_job(service: objects.Service) -> bool:
    return service.spec.mode in _JOBS


def is_global(service: objects.Service) -> bool:
    return service.spec.mode in _GLOBALS


def run_state(service: objects.Service) -> State:
    """The desired state of a task that should be running: jobs run to COMPLETE."""
    return objects.TASK_COMPLETE if is_job(service) else objects.TASK_RUNNING


def slot_key(task: objects.Task) -> SlotKey:
    return task.slot if task.slot else task.node_id


def sort_key(key: SlotKey) -> tuple[int, str]:
    """Slots in number order (node ids by name): never compare an int with a str."""
    return (key, "") if isinstance(key, int) else (0, key)


def is_live(task: objects.Task) -> bool:
    """Still wanted: desired READY..RUNNING, or a job's desired COMPLETE not reached."""
    if task.desired_state <= objects.TASK_RUNNING:
        return True
    return task.desired_state == objects.TASK_COMPLETE and (
        task.status.state != objects.TASK_COMPLETE
    )


def has_ended(task: objects.Task) -> bool:
    """Live, but its container is gone: the restart supervisor's business."""
    return is_live(task) and api_tasks.is_terminal(task.status.state)


def is_dirty(task: objects.Task, service: objects.Service) -> bool:
    """Made from an older spec that differs in what a task runs. The control API bumps
    spec_version for endpoint and mode changes too; comparing the specs as well means a
    rollback does not replace tasks that never left the spec it returns to."""
    if task.spec_version >= service.spec_version:
        return False
    return task.spec != service.spec.task or task.endpoint.spec != service.endpoint.spec


def group_live(tasks: dict[str, objects.Task]) -> dict[SlotKey, list[objects.Task]]:
    by_slot: dict[SlotKey, list[objects.Task]] = {}
    for task in tasks.values():
        if is_live(task):
            by_slot.setdefault(slot_key(task), []).append(task)
    return by_slot


# ---- nodes -------------------------------------------------------------------------


def node_lost(node: objects.Node | None) -> bool:
    """A replicated task on this node must be replaced elsewhere."""
    return (
        node is None or node.status.state == objects.DOWN or node.spec.availability == objects.DRAIN
    )


def node_gone(node: objects.Node | None) -> bool:
    """No agent will report for tasks on this node any more (until it comes back)."""
    return node is None or node.status.state == objects.DOWN


def matches(node: objects.Node, service: objects.Service) -> bool:
    constraints = _parsed(tuple(service.spec.task.placement.constraints))
    return constraints is not None and all(c.matches(node) for c in constraints)


def may_keep(node: objects.Node | None, service: objects.Service) -> bool:
    """A global task may stay on this node (PAUSE keeps tasks, DRAIN does not)."""
    return node is not None and node.spec.availability != objects.DRAIN and matches(node, service)


def takes_new(node: objects.Node | None, service: objects.Service) -> bool:
    """A new global task may be placed on this node."""
    return (
        node is not None
        and node.spec.availability == objects.ACTIVE
        and node.status.state != objects.DOWN
        and matches(node, service)
    )


@functools.lru_cache(maxsize=1024)
def _parsed(exprs: tuple[str, ...]) -> tuple[Constraint, ...] | None:
    # The control API validated them; a constraint it let through that does not parse
    # here matches no node, as the scheduler treats it.
    try:
        return tuple(parse_constraints(exprs))
    except InvalidArgument:
        return None


# ---- new tasks -----------------------------------------------------------------------


def new_task(
    ctx: Ctx, *, slot: int = 0, node_id: str = "", desired: State = objects.TASK_RUNNING
) -> objects.Task:
    """A task for the service's current spec, as the allocator expects to find it."""
    task = objects.Task()
    task.CopyFrom(ctx.template())  # one C-level copy: 100,000 tasks must be cheap to make
    task.meta.id = new_id()
    task.slot = slot
    task.node_id = node_id
    task.desired_state = desired
    return task


def _template(service: objects.Service, wall: float) -> objects.Task:
    task = objects.Task(
        service_id=service.meta.id,
        service_name=service.spec.name,
        spec_version=service.spec_version,
        job_iteration=service.job_iteration,
    )
    task.meta.created_at = wall  # the store sets it again; ours orders them meanwhile
    task.spec.CopyFrom(service.spec.task)
    task.endpoint.CopyFrom(service.endpoint)
    task.status.state = objects.TASK_NEW
    task.status.message = "created"
    task.status.timestamp = wall
    return task

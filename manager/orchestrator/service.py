"""One pass over one service: read it, decide, write. O(its tasks), via ByService.

The order of a pass matters:
1. the updater looks for failures first, while ended tasks still look as they ended;
2. the restart supervisor replaces ended tasks and tasks on lost nodes;
3. the mode's reconciler counts slots (or nodes) with those replacements in place,
   leaving alone the slots the updater holds and the dead ones;
4. the updater moves on (its new tasks see the slots settled);
5. due READY tasks are promoted; the reaper trims history; then one batched commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from api import objects_pb2 as objects
from manager import store as st
from manager.orchestrator import jobs
from manager.orchestrator.common import Ctx, is_dirty, is_global, is_job, is_live
from manager.orchestrator.global_ import reconcile_global
from manager.orchestrator.plan import Plan, ServiceChange, commit
from manager.orchestrator.reaper import history_limit, reap_history, reap_orphans
from manager.orchestrator.replicated import reconcile_replicated
from manager.orchestrator.restart import RestartSupervisor
from manager.orchestrator.update import ACTIVE_STATES, PAUSED_STATES, US, Updater


@dataclass
class ServiceMemory:
    """What the orchestrator remembers about a service between passes (leader only)."""

    restarts: RestartSupervisor = field(default_factory=RestartSupervisor)
    updater: Updater | None = None


@dataclass
class _Read:
    service: objects.Service | None
    tasks: list[objects.Task]
    nodes: dict[str, objects.Node]
    clusters: list[objects.Cluster]


def _read(service_id: str, tx: st.ReadTx) -> _Read:
    return _Read(
        service=st.get_service(tx, service_id),
        tasks=st.find_tasks(tx, by=st.ByService(service_id)),
        nodes={n.meta.id: n for n in st.find_nodes(tx)},
        clusters=st.find_clusters(tx),
    )


@dataclass(frozen=True)
class Outcome:
    wake: float | None  # the monotonic time the service next needs a pass, if any
    gone: bool = False  # deleted, and its last task deleted: forget it


def reconcile_service(
    store: st.MemoryStore, memory: ServiceMemory, service_id: str, *, now: float, wall: float
) -> Outcome:
    """Reconcile one service. Raises what the store raises; the caller retries later."""
    read = store.view(lambda tx: _read(service_id, tx))
    plan = Plan(service_id, read.tasks)
    service = read.service
    if service is None or service.pending_delete:
        reap_orphans(plan, read.nodes)
        commit(store, plan)
        return Outcome(wake=None, gone=service is None and not plan.tasks)
    ctx = Ctx(service=service, nodes=read.nodes, now=now, wall=wall)
    wake = _decide(ctx, memory, plan)
    reap_history(plan, read.nodes, history_limit(read.clusters))
    commit(store, plan)
    return Outcome(wake=wake)


def _decide(ctx: Ctx, memory: ServiceMemory, plan: Plan) -> float | None:
    updater = _updater(ctx, memory, plan)
    if updater is not None:
        updater.check_failures(ctx, plan)
    held = updater.held() if updater is not None else set()
    restarts = memory.restarts
    restarts.supervise(ctx, plan)
    dead = restarts.dead_slots(ctx.service)
    if is_job(ctx.service):
        jobs.retire_old_iterations(ctx, plan)
    if is_global(ctx.service):
        reconcile_global(ctx, plan, held=held, dead=dead)
    elif is_job(ctx.service):
        jobs.reconcile_replicated_job(ctx, plan, dead=dead)
    else:
        reconcile_replicated(ctx, plan, held=held, dead=dead)
    wakes = [restarts.promote(ctx, plan)]
    if updater is not None:
        wakes.append(updater.advance(ctx, plan))
    return min((w for w in wakes if w is not None), default=None)


def _updater(ctx: Ctx, memory: ServiceMemory, plan: Plan) -> Updater | None:
    """The service's updater for its current spec_version, made when there is work."""
    service = ctx.service
    state = service.update_status.state
    if is_job(service):
        # Jobs are not rolled: a changed job runs again as a new iteration.
        if state in ACTIVE_STATES:
            plan.service_change = _job_updated(service.spec_version, ctx.wall)
        return None
    if state in PAUSED_STATES:
        memory.updater = None
        return None
    updater = memory.updater
    if updater is not None and updater.version != service.spec_version:
        updater = None  # superseded by a newer spec
    if updater is None or updater.completed:
        wanted = state in ACTIVE_STATES or any(
            is_live(t) and is_dirty(t, service) for t in plan.tasks.values()
        )
        updater = Updater(service, ctx.now) if wanted else None
    memory.updater = updater
    return updater


def _job_updated(version: int, wall: float) -> ServiceChange:
    def change(service: objects.Service) -> bool:
        if service.spec_version != version or service.update_status.state not in ACTIVE_STATES:
            return False
        done = US.ROLLBACK_COMPLETED if service.update_status.state == US.ROLLBACK_STARTED else None
        service.update_status.state = done or US.COMPLETED
        service.update_status.message = "rollback completed" if done else "update completed"
        service.update_status.completed_at = wall
        return True

    return change

"""The orchestrators: turn services into tasks, keep them running, roll them, reap them.

Design (after swarmkit's manager/orchestrator): level-triggered reconcilers, run on
the Raft leader only (the manager starts an `Orchestrator` on leadership and stops it
on loss). Store events mark services dirty; each Commit marker triggers a pass that
reconciles every dirty service from a fresh read, in O(its tasks), and writes the
result in batches (`store.batch`, a proposal every 200 writes). Timers (restart delays,
update delays, monitor periods) run off an injected monotonic clock, so tests drive
everything with `reconcile_all()` and `tick()`.

Modules: `common` (slot keys, liveness, eligibility, new tasks), `plan` (decide on
copies, then commit), `replicated`, `global_`, `jobs`, `restart` (the supervisor),
`update` (the rolling updater), `reaper`, `service` (one pass over one service) and
`orchestrator` (threads, events, timers).

Invariants:
- at most one *live* task (desired READY/RUNNING, or a job's COMPLETE not yet reached)
  per slot (replicated: slot number; global: node), except during a start-first
  update, whose updater holds the slot until the old task is shut down;
- a replicated service has exactly `replicas` live slots, a global one a live task on
  every eligible node, once converged;
- desired_state only moves forward; every task write re-reads the task first.

Who writes what:
- the control API creates, updates and deletes Service objects (spec, spec_version,
  previous_spec, update_status UPDATING / ROLLBACK_STARTED, job_iteration);
- the orchestrator creates tasks (status NEW, "created"), raises their desired_state,
  deletes them (reaper), and writes a service's update_status (PAUSED, COMPLETED, ...)
  and, for an automatic rollback, the spec swap `service rollback` makes;
- the allocator moves tasks NEW → PENDING, the scheduler PENDING → ASSIGNED (node_id),
  the dispatcher writes the agents' status and marks nodes DOWN.

Usage::

    orch = Orchestrator(store)   # clock=time.monotonic, wall=time.time
    orch.start()
    ...
    orch.stop()
"""

from manager.orchestrator.orchestrator import Orchestrator

__all__ = ["Orchestrator"]

"""The scheduler: puts PENDING tasks on nodes (leader only).

Design (after swarmkit's manager/scheduler and nomad's plan/apply split):

- `plan(nodes, tasks, rng=, now=) -> Plan` is a pure function of a snapshot: NodeInfos
  (`nodeinfo`: a node plus the tasks occupying it) and the tasks to place. It changes
  neither; it returns assignments and, for tasks no node can take, docker's reason
  ("no suitable node (insufficient memory on 2 nodes)").
- Feasibility is a `Pipeline` of small filters (`filters`: ready, constraints incl.
  platform, memory, cpu, host ports, max replicas per node), each with `set_task`,
  `check(info)` and `explain(count)`; a node is counted against the first filter that
  turns it away.
- Choice is the spread strategy (`spread`): placement preferences split the nodes into
  a tree by label value and tasks fill the branches evenly; within a branch the node with
  the fewest tasks of the service, then the fewest tasks, wins, nodes where this service
  version keeps failing last, ties to a random node from the injected `random.Random`.
- `Scheduler` (`scheduler`, `state`) is the loop: it mirrors nodes and tasks from a
  store watch, debounces, plans, and commits each assignment only if the task is still
  PENDING at the version it was planned at.

Invariants: a task is only assigned to a node that passed every filter at the moment
of that placement (within a plan, earlier placements count); the store's state, not
the plan, is what the loop's NodeInfos show; a task that cannot be placed stays PENDING
with `status.err` set, and is planned again when capacity may have appeared.

Usage::

    from manager.scheduler import Scheduler, plan, validate_placement

    validate_placement(spec.task.placement)      # control API, at service create
    scheduler = Scheduler(store)                 # on becoming leader
    scheduler.start()
    scheduler.stop()                             # on losing leadership
"""

from manager.scheduler.constraints import (
    Constraint,
    parse_constraint,
    parse_constraints,
    validate_placement,
)
from manager.scheduler.nodeinfo import NodeInfo
from manager.scheduler.pipeline import Pipeline
from manager.scheduler.planner import Plan, plan
from manager.scheduler.scheduler import Scheduler

__all__ = [
    "Constraint",
    "NodeInfo",
    "Pipeline",
    "Plan",
    "Scheduler",
    "parse_constraint",
    "parse_constraints",
    "plan",
    "validate_placement",
]

"""The scheduler loop's picture of the cluster, kept current from watch events.

`nodes` holds a NodeInfo per known node with the tasks occupying it; `pending` the
tasks waiting for a node. A task is due for planning when it has just become pending
(`fresh`), and every pending task is due again (`retry`) when capacity may have
appeared: a node was added or changed in a way the filters look at, or a task left a
node. Applying the same event twice changes nothing, so the loop may see its own
writes in any interleaving.
"""

from __future__ import annotations

from typing import Final

from api import objects_pb2 as objects
from api.tasks import awaiting_addresses
from manager import store as st
from manager.scheduler.nodeinfo import NodeInfo, occupies

_FAILED: Final = frozenset({objects.TASK_FAILED, objects.TASK_REJECTED})
_OCCUPYING_STATES: Final = (
    objects.TASK_ASSIGNED,
    objects.TASK_ACCEPTED,
    objects.TASK_PREPARING,
    objects.TASK_READY,
    objects.TASK_STARTING,
    objects.TASK_RUNNING,
)


def is_pending(task: objects.Task) -> bool:
    """Waiting for the scheduler; desired READY is a delayed restart, planned as well."""
    return (
        task.status.state == objects.TASK_PENDING
        and task.desired_state <= objects.TASK_RUNNING
        and not awaiting_addresses(task)
        and bool(task.service_id)  # not a standalone container's network attachment
    )


def _placement_view(node: objects.Node) -> tuple[object, ...]:
    """What of a node the filters and the spread look at (not heartbeats, messages)."""
    return (node.spec, node.description, node.status.state, node.status.addr, node.role)


class SchedulerState:
    def __init__(self) -> None:
        self.nodes: dict[str, NodeInfo] = {}
        self.pending: dict[str, objects.Task] = {}
        self.fresh: set[str] = set()
        self.retry = False
        self._where: dict[str, str] = {}  # task id -> node id, for tasks in `nodes`
        # Tasks on nodes not (yet) known: adopted if the node appears.
        self._stray: dict[str, dict[str, objects.Task]] = {}

    @classmethod
    def listing(cls, tx: st.ReadTx) -> SchedulerState:
        """Everything from one read: nodes, occupying tasks, pending tasks."""
        state = cls()
        for node in st.find_nodes(tx):
            state.nodes[node.meta.id] = NodeInfo(node)
        for value in _OCCUPYING_STATES:
            for task in st.find_tasks(tx, by=st.ByTaskState(value)):
                state._place(task)
        for task in st.find_tasks(tx, by=st.ByTaskState(objects.TASK_PENDING)):
            if is_pending(task):
                state.pending[task.meta.id] = task
        state.fresh = set(state.pending)
        return state

    @property
    def wants_plan(self) -> bool:
        return bool(self.fresh) or (self.retry and bool(self.pending))

    def inherit_failures(self, old: SchedulerState) -> None:
        """Keep the failure history across a re-list (it is not in the store)."""
        for node_id, info in self.nodes.items():
            previous = old.nodes.get(node_id)
            if previous is not None:
                info.failures = previous.failures

    def take_due(self) -> list[objects.Task]:
        """The tasks to plan now, in id order (so a seeded plan is reproducible)."""
        ids = set(self.pending) if self.retry else self.fresh & self.pending.keys()
        self.fresh = set()
        self.retry = False
        return [self.pending[i] for i in sorted(ids)]

    def retry_all(self) -> None:
        self.retry = True

    # ---- events -------------------------------------------------------------------------

    def apply_task(self, event: st.Event, *, now: float) -> bool:
        """Apply a task event; whether a plan is now due."""
        task = event.obj
        assert isinstance(task, objects.Task)
        task_id = task.meta.id
        if event.action is st.EventAction.REMOVE:
            self.pending.pop(task_id, None)
            self.fresh.discard(task_id)
            return self._freed(self._unplace(task_id))
        old = event.old
        if isinstance(old, objects.Task) and old.status.state != task.status.state:
            self._record_failure(task, now=now)
        if is_pending(task):
            self._unplace(task_id)
            new = task_id not in self.pending
            self.pending[task_id] = task
            if new:
                self.fresh.add(task_id)
            return new
        self.pending.pop(task_id, None)
        self.fresh.discard(task_id)
        if occupies(task):
            moved = self._where.get(task_id, task.node_id) != task.node_id
            freed = self._unplace(task_id) if moved else False
            self._place(task)
            return self._freed(freed)
        return self._freed(self._unplace(task_id))

    def apply_node(self, event: st.Event) -> bool:
        """Apply a node event; whether a plan is now due."""
        node = event.obj
        assert isinstance(node, objects.Node)
        node_id = node.meta.id
        if event.action is st.EventAction.REMOVE:
            info = self.nodes.pop(node_id, None)
            for task_id in info.tasks if info is not None else ():
                self._where.pop(task_id, None)
            return False
        info = self.nodes.get(node_id)
        if info is None:
            info = self.nodes[node_id] = NodeInfo(node)
            for task in self._stray.pop(node_id, {}).values():
                self._place(task)
            return self._freed(True)
        changed = _placement_view(info.node) != _placement_view(node)
        info.node = node
        return self._freed(changed)

    # ---- internals ----------------------------------------------------------------------

    def _place(self, task: objects.Task) -> None:
        info = self.nodes.get(task.node_id)
        if info is None:
            self._stray.setdefault(task.node_id, {})[task.meta.id] = task
            return
        info.add_task(task)
        self._where[task.meta.id] = task.node_id

    def _unplace(self, task_id: str) -> bool:
        """Take the task off its node; whether it was on one (capacity freed)."""
        node_id = self._where.pop(task_id, None)
        if node_id is None:
            for tasks in self._stray.values():
                tasks.pop(task_id, None)
            return False
        info = self.nodes.get(node_id)
        return info is not None and info.remove_task(task_id)

    def _record_failure(self, task: objects.Task, *, now: float) -> None:
        info = self.nodes.get(task.node_id)
        if task.status.state in _FAILED and info is not None:
            info.record_failure(task, now=now)

    def _freed(self, freed: bool) -> bool:
        """Capacity may have appeared: every pending task is due again."""
        if freed:
            self.retry = True
        return freed and bool(self.pending)

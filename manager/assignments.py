"""What each node is told to run: its tasks, and the secrets and configs they use.

A session starts with the full set (every task assigned to the node, history
included, so the agent knows which containers to keep), taken at one store version;
after that the dispatcher sends increments built here from the store's watch events,
one message per node per applied batch, skipping batches the full set already covered.

Agents report their tasks' status; those writes come back as watch events and are NOT
echoed to the agent: a task is sent again only when something the agent acts on
changed (its assignment, desired state or spec). Secrets and configs are sent once per
session, just before the first task that needs them; the node never gets any other.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from api import objects_pb2 as objects
from api import swarm_pb2 as swarm
from api import tasks as tasklib
from manager import store as st


def assigned(task: objects.Task) -> bool:
    return bool(task.node_id) and task.status.state >= objects.TASK_ASSIGNED


def agent_relevant(task: objects.Task, old: objects.Task | None) -> bool:
    if not assigned(task):
        return False
    if old is None or not assigned(old) or old.node_id != task.node_id:
        return True
    return old.desired_state != task.desired_state or old.spec != task.spec


def files_of(task: objects.Task) -> list[str]:
    if tasklib.is_terminal(task.status.state):
        return []
    container = task.spec.container
    return [r.id for r in (*container.secrets, *container.configs)]


def full_set(tx: st.ReadTx, node_id: str) -> tuple[swarm.AssignmentsMessage, set[str]]:
    """Everything the node runs, and the ids of the secrets and configs sent with it."""
    # read-only: copied into the message
    found = [t for t in st.find_tasks(tx, by=st.ByNode(node_id), copy=False) if assigned(t)]
    message = swarm.AssignmentsMessage(full=True, tasks=found)
    sent: set[str] = set()
    add_files(tx, message=message, ids=[f for t in found for f in files_of(t)], sent=sent)
    return message, sent


def add_files(
    tx: st.ReadTx, *, message: swarm.AssignmentsMessage, ids: list[str], sent: set[str]
) -> None:
    for file_id in ids:
        if file_id in sent:
            continue
        secret = st.get_secret(tx, file_id)
        if secret is not None:
            message.secrets.append(secret)
        config = st.get_config(tx, file_id)
        if config is not None:
            message.configs.append(config)
        sent.add(file_id)


@dataclass
class Changes:
    """Per node, the tasks changed and removed by the batches seen since the last flush."""

    tasks: dict[str, dict[str, objects.Task]] = field(default_factory=lambda: defaultdict(dict))
    removed: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def add(self, event: st.Event) -> None:
        task = event.obj
        old = event.old
        assert isinstance(task, objects.Task)
        assert old is None or isinstance(old, objects.Task)
        if event.action == st.EventAction.REMOVE:
            if task.node_id:
                self.tasks[task.node_id].pop(task.meta.id, None)
                self.removed[task.node_id].add(task.meta.id)
            return
        if old is not None and old.node_id and old.node_id != task.node_id:
            self.removed[old.node_id].add(task.meta.id)
        if agent_relevant(task, old):
            self.tasks[task.node_id][task.meta.id] = task
            self.removed[task.node_id].discard(task.meta.id)

    def nodes(self) -> set[str]:
        return {n for n, t in self.tasks.items() if t} | {n for n, r in self.removed.items() if r}

    def message(self, node_id: str) -> swarm.AssignmentsMessage:
        return swarm.AssignmentsMessage(
            tasks=list(self.tasks.get(node_id, {}).values()),
            removed_tasks=sorted(self.removed.get(node_id, set())),
        )

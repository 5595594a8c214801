"""What the manager and the agent both need to know about tasks.

States only move forward (NEW → … → RUNNING → a terminal state); their numbers are
ordered, so "at least STARTING" is a comparison. A task's container carries docker's
swarm labels, and its name is docker's `<service>.<slot>.<task id>` (global services use
the node id in place of the slot).
"""

from __future__ import annotations

import re
from typing import Final, TypeAlias

from api import objects_pb2 as objects

DEFAULT_STOP_GRACE: Final = 10.0  # seconds (docker's --stop-grace-period)
DEFAULT_RESTART_DELAY: Final = 5.0  # seconds (--restart-delay)
DEFAULT_MONITOR: Final = 5.0  # seconds (--update-monitor)
DEFAULT_PARALLELISM: Final = 1  # --update-parallelism

LABEL_SERVICE_ID: Final = "com.docker.swarm.service.id"
LABEL_SERVICE_NAME: Final = "com.docker.swarm.service.name"
LABEL_TASK_ID: Final = "com.docker.swarm.task.id"
LABEL_TASK_NAME: Final = "com.docker.swarm.task.name"
LABEL_TASK_SLOT: Final = "com.docker.swarm.task.slot"
LABEL_NODE_ID: Final = "com.docker.swarm.node.id"

State: TypeAlias = objects.TaskState.ValueType

# docker's words for each state, as `service ps` prints them ("Running 2 minutes ago").
_NAMES: Final[dict[int, str]] = {
    objects.TASK_NEW: "New",
    objects.TASK_PENDING: "Pending",
    objects.TASK_ASSIGNED: "Assigned",
    objects.TASK_ACCEPTED: "Accepted",
    objects.TASK_PREPARING: "Preparing",
    objects.TASK_READY: "Ready",
    objects.TASK_STARTING: "Starting",
    objects.TASK_RUNNING: "Running",
    objects.TASK_COMPLETE: "Complete",
    objects.TASK_SHUTDOWN: "Shutdown",
    objects.TASK_FAILED: "Failed",
    objects.TASK_REJECTED: "Rejected",
    objects.TASK_REMOVE: "Remove",
    objects.TASK_ORPHANED: "Orphaned",
}


def state_name(state: State) -> str:
    return _NAMES.get(state, "Unknown")


def is_terminal(state: State) -> bool:
    """COMPLETE, SHUTDOWN, FAILED, REJECTED, REMOVE or ORPHANED: nothing more happens."""
    return state >= objects.TASK_COMPLETE


ALLOCATION_FAILED = "could not allocate IP"


def awaiting_addresses(task: objects.Task) -> bool:
    """A PENDING task whose network addresses could not be allocated yet: the
    allocator retries it when addresses are freed; the scheduler leaves it alone."""
    return task.status.err.startswith(ALLOCATION_FAILED)


def slot_or_node(task: objects.Task) -> str:
    return str(task.slot) if task.slot else task.node_id


def task_name(task: objects.Task) -> str:
    """docker's container name for a task: `web.1.<task id>`."""
    return f"{task.service_name}.{slot_or_node(task)}.{task.meta.id}"


def short_name(task: objects.Task) -> str:
    """The name `service ps` shows: `web.1` (or `web.<node id>` for global tasks)."""
    return f"{task.service_name}.{slot_or_node(task)}"


def labels(task: objects.Task) -> dict[str, str]:
    """The labels a task's container carries (besides the service's container labels)."""
    return {
        LABEL_SERVICE_ID: task.service_id,
        LABEL_SERVICE_NAME: task.service_name,
        LABEL_TASK_ID: task.meta.id,
        LABEL_TASK_NAME: task_name(task),
        LABEL_TASK_SLOT: str(task.slot),
        LABEL_NODE_ID: task.node_id,
    }


_TEMPLATE = re.compile(r"\{\{\s*\.(\w+)\.(\w+)\s*\}\}")


def expand(template: str, task: objects.Task, *, node_hostname: str = "") -> str:
    """Expand docker's service templates ({{.Service.Name}}, {{.Task.Slot}}, ...).
    Unknown placeholders are left as written."""
    values = {
        ("Service", "ID"): task.service_id,
        ("Service", "Name"): task.service_name,
        ("Task", "ID"): task.meta.id,
        ("Task", "Name"): task_name(task),
        ("Task", "Slot"): slot_or_node(task),
        ("Node", "ID"): task.node_id,
        ("Node", "Hostname"): node_hostname,
    }
    return _TEMPLATE.sub(lambda m: values.get((m.group(1), m.group(2)), m.group(0)), template)

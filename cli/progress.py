"""docker's convergence display for `service create/update/scale/rollback`.

    overall progress: 2 out of 3 tasks
    1/3: running   [==================================================>]
    2/3: preparing [=================================>                 ]
    3/3: running   [==================================================>]
    verify: Waiting 5 seconds to verify that tasks are stable...

`Renderer` turns one poll (the Service, its tasks, the ready nodes) into those lines;
`watch` polls through an injected `fetch` (GetService + ListTasks, ~every 200 ms) until
the tasks run the current spec and stay so for the verify period, or the update pauses
or rolls back. On a terminal the lines are redrawn in place (plain ANSI, as docker's
jsonmessage); piped, a line is printed only when it changes. Clock and sleep are
injected so tests run the loop against synthetic objects instantly.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple, TextIO

if TYPE_CHECKING:
    from api import objects_pb2 as opb

POLL_INTERVAL = 0.2
DEFAULT_MONITOR = 5.0
CREATE_VERIFY_MAX = 5.0
BAR_WIDTH = 50
ERROR_WIDTH = 75
# docker's numberedStates: how far along the bar each state is (running = full).
STATE_STEPS = {"new": 1, "pending": 3, "assigned": 4, "accepted": 5, "preparing": 6}
STATE_STEPS |= {"ready": 7, "starting": 8, "running": 9}
MAX_STEP = 9
STATE_WIDTH = len("preparing")  # docker pads the state to its longest name


class Snapshot(NamedTuple):
    """One poll: the service, its tasks, and (global services) the ready, active nodes."""

    service: opb.Service
    tasks: Sequence[opb.Task]
    nodes: Sequence[opb.Node] | None = None


class Result(NamedTuple):
    """How watching ended: converged, or `error` (paused, rolled back) for stderr."""

    converged: bool
    error: str = ""
    interrupted: bool = False


Line = tuple[str, str]  # (id, text): shown as "id: text"


def bar(state_name: str) -> str:
    """docker's per-state progress bar: `[=====>     ]`, full at running."""
    step = STATE_STEPS.get(state_name, 0)
    filled = min(int(step / MAX_STEP * 100) // 2, BAR_WIDTH)
    return f"[{'=' * filled}>{' ' * (BAR_WIDTH - filled)}]"


def trunc_error(message: str) -> str:
    """docker's truncError: one line, at most 75 characters."""
    message = message.replace("\n", " ")
    return message if len(message) <= ERROR_WIDTH else message[: ERROR_WIDTH - 1] + "…"


def strip_digest(image: str) -> str:
    return image.partition("@")[0] if "@sha256:" in image else image


def is_current(task: opb.Task, service: opb.Service) -> bool:
    """Does `task` run the service's current task spec (the image pinned by digest on
    tasks compares equal to the unpinned one)?"""
    from api import objects_pb2 as opb

    mine, wanted = opb.TaskSpec(), opb.TaskSpec()
    mine.CopyFrom(task.spec)
    wanted.CopyFrom(service.spec.task)
    mine.container.image = strip_digest(mine.container.image)
    wanted.container.image = strip_digest(wanted.container.image)
    return mine == wanted


class Renderer:
    """The progress lines of one service, kept across polls as docker's updaters are:
    a slot's (or node's) line changes only when its task says something new."""

    def __init__(self, *, rollback: bool = False) -> None:
        self.rollback = rollback
        self.lines: dict[str, str] = {}
        self._slots: dict[str, int] = {}

    def update(self, snap: Snapshot) -> bool:
        """Redraw from `snap`; True when every task the service wants runs (or, for a
        job, has completed) on the current spec."""
        from api import objects_pb2 as opb

        mode = snap.service.spec.mode
        if mode in (opb.REPLICATED_JOB, opb.GLOBAL_JOB):
            return self._job(snap)
        if mode == opb.GLOBAL:
            return self._global(snap)
        return self._replicated(snap)

    def frame(self) -> list[Line]:
        return list(self.lines.items())

    # ---- per mode ----

    def _replicated(self, snap: Snapshot) -> bool:
        from api.tasks import is_terminal

        replicas = snap.service.spec.replicas
        by_slot = _newest_by(snap, lambda t: str(t.slot))
        # Lines go to the slots that are wanted now: after a scale down the slots left
        # need not be 1..N (the most loaded nodes lost theirs), as docker maps them.
        live = [k for k, t in by_slot.items() if not is_terminal(t.desired_state)]
        for key in sorted(live, key=int)[: max(replicas, 0)]:
            self._slots.setdefault(key, len(self._slots) + 1)
        running = 0
        for key, index in sorted(self._slots.items(), key=lambda item: item[1]):
            if key in by_slot and index <= replicas:
                running += self._task_line(f"{index}/{replicas}", by_slot[key], snap.service)
        self._overall(running, replicas)
        self._drop_extra()
        return running == replicas

    def _global(self, snap: Snapshot) -> bool:
        ready = {n.meta.id for n in snap.nodes} if snap.nodes is not None else None
        by_node = _newest_by(snap, lambda t: t.node_id)
        by_node = {k: t for k, t in by_node.items() if ready is None or k in ready}
        running = 0
        for node_id in sorted(by_node):
            running += self._task_line(node_id[:12], by_node[node_id], snap.service)
        self._overall(running, len(by_node))
        return running == len(by_node)

    def _job(self, snap: Snapshot) -> bool:
        from api import objects_pb2 as opb

        service = snap.service
        tasks = [t for t in snap.tasks if t.job_iteration == service.job_iteration]
        completed = sum(t.status.state == opb.TASK_COMPLETE for t in tasks)
        active = [t for t in tasks if t.status.state < opb.TASK_COMPLETE]
        if service.spec.mode == opb.REPLICATED_JOB:
            total = service.spec.replicas
            self.lines["job progress"] = f"{completed} out of {total} complete"
            concurrent = min(service.spec.max_concurrent or total, total - completed)
            self.lines["active tasks"] = f"{len(active)} out of {max(concurrent, 0)} tasks"
        else:
            total = len(tasks)
            self.lines["job progress"] = f"{completed} out of {total} complete"
        for task in sorted(active, key=lambda t: (t.slot, t.node_id)):
            key = f"{task.slot}/{total}" if task.slot else task.node_id[:12]
            self._task_line(key, task, service)
        return total > 0 and completed >= total

    # ---- lines ----

    def _task_line(self, key: str, task: opb.Task, service: opb.Service) -> int:
        """Write `task`'s line; 1 if it runs the current spec."""
        from api import objects_pb2 as opb
        from api.tasks import is_terminal, state_name

        if task.status.err:
            self.lines[key] = trunc_error(task.status.err)
            return 0
        if is_terminal(task.desired_state) or is_terminal(task.status.state):
            self.lines.setdefault(key, " ")
            return 0
        name = state_name(task.status.state).lower()
        self.lines[key] = f"{name:<{STATE_WIDTH}} {bar(name)}"
        return int(task.status.state == opb.TASK_RUNNING and is_current(task, service))

    def _overall(self, done: int, total: int) -> None:
        """`overall progress: 2 out of 3 tasks` (`rolling back update: 2 out of 3 tasks`
        while rolling back), always the first line."""
        text = f"{done} out of {total} tasks"
        if self.rollback:
            text = f"rolling back update: {text}"
        rest = {k: v for k, v in self.lines.items() if k != "overall progress"}
        self.lines = {"overall progress": text, **rest}

    def _drop_extra(self) -> None:
        """Slots beyond the replica count (a scale down) leave the display."""
        for line_id in list(self.lines):
            index, _, total = line_id.partition("/")
            if index.isdigit() and total.isdigit() and int(index) > int(total):
                del self.lines[line_id]


def _newest_by(snap: Snapshot, key: Callable[[opb.Task], str]) -> dict[str, opb.Task]:
    """Per slot (or node) the task that counts: desired to run rather than stopped,
    then the newest."""
    from api.tasks import is_terminal

    best: dict[str, opb.Task] = {}
    for task in snap.tasks:
        if task.service_id != snap.service.meta.id:
            continue
        k = key(task)
        rank = (not is_terminal(task.desired_state), task.meta.created_at)
        if k not in best:
            best[k] = task
            continue
        other = best[k]
        if rank > (not is_terminal(other.desired_state), other.meta.created_at):
            best[k] = task
    return best


# ---- output -----------------------------------------------------------------------


class Display:
    """Where the lines go: redrawn in place on a terminal, printed when changed if not."""

    def __init__(self, out: TextIO, *, tty: bool) -> None:
        self.out = out
        self.tty = tty
        self._drawn = 0
        self._printed: dict[str, str] = {}

    def show(self, lines: Sequence[Line]) -> None:
        if self.tty:
            text = "".join(f"\x1b[2K{_fmt(line)}\n" for line in lines)
            up = f"\x1b[{self._drawn}A" if self._drawn else ""
            self.out.write(up + text)
            self._drawn = len(lines)
        else:
            for line_id, value in lines:
                seen = re.sub(r"^Waiting \d+ seconds", "Waiting", _plain(value))
                if self._printed.get(line_id) != seen:
                    self._printed[line_id] = seen
                    self.out.write(_fmt((line_id, _plain(value))) + "\n")
        self.out.flush()

    def message(self, text: str) -> None:
        """A line above the frame (on a terminal the frame is drawn again below it)."""
        up = f"\x1b[{self._drawn}A\x1b[J" if self.tty and self._drawn else ""
        self.out.write(up + text + "\n")
        self._drawn = 0
        self.out.flush()


def _fmt(line: Line) -> str:
    return f"{line[0]}: {line[1]}".rstrip() if line[0] else line[1]


def _plain(value: str) -> str:
    """Piped output drops the bars: docker's non-terminal form."""
    return re.sub(r"\s*\[=*>\s*\]$", "", value)


# ---- the loop ---------------------------------------------------------------------


def verify_period(service: opb.Service, *, created: bool) -> float:
    """The update monitor (default 5 s); on create at most 5 s."""
    spec = service.spec.update
    monitor = spec.monitor if spec.HasField("monitor") else DEFAULT_MONITOR
    return min(monitor, CREATE_VERIFY_MAX) if created else monitor


def update_failure(
    status: opb.UpdateStatus, *, rollback_requested: bool, converged: bool
) -> str | None:
    """The error for a paused or rolled-back update (None: keep watching)."""
    from api import objects_pb2 as opb

    state, message = status.state, status.message
    if state == opb.UpdateStatus.PAUSED:
        return f"Error: service update paused: {message}"
    if state == opb.UpdateStatus.ROLLBACK_PAUSED:
        return f"Error: service rollback paused: {message}"
    if state == opb.UpdateStatus.ROLLBACK_COMPLETED and not rollback_requested and converged:
        return f"Error: service rolled back: {message}"
    return None


def watch(
    fetch: Callable[[], Snapshot],
    display: Display,
    *,
    verify: float,
    rollback: bool = False,
    stale: opb.UpdateStatus | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    interval: float = POLL_INTERVAL,
) -> Result:
    """Poll until converged and stable for `verify` seconds, or the update fails.

    `stale` is an update status seen before this operation (a previous update's PAUSED):
    ignored until the managers replace it. `rollback` marks a requested rollback, whose
    completion is success."""
    from api import objects_pb2 as opb

    renderer = Renderer(rollback=rollback)
    converged_at: float | None = None
    announced = False
    try:
        while True:
            snap = fetch()
            status = snap.service.update_status
            fresh = stale is None or status != stale
            if fresh and status.state == opb.UpdateStatus.ROLLBACK_STARTED:
                renderer.rollback = True
                if not announced:
                    display.message(f"rollback: {status.message or 'manually requested rollback'}")
                    announced = True
            tasks_done = renderer.update(snap)
            updating = fresh and status.state in (
                opb.UpdateStatus.UPDATING,
                opb.UpdateStatus.ROLLBACK_STARTED,
            )
            converged = tasks_done and not updating
            failure = update_failure(status, rollback_requested=rollback, converged=converged)
            if fresh and failure is not None:
                display.show(renderer.frame())
                return Result(False, failure)
            now = clock()
            is_job = snap.service.spec.mode in (opb.REPLICATED_JOB, opb.GLOBAL_JOB)
            if converged and is_job:
                display.show(renderer.frame())
                return Result(True)
            if not converged:
                converged_at = None
                renderer.lines.pop("verify", None)
            elif converged_at is None:
                converged_at = now
            if converged_at is not None:
                left = verify - (now - converged_at)
                if left <= 0:
                    renderer.lines["verify"] = "Service converged"
                    display.show(renderer.frame())
                    return Result(True)
                seconds = math.ceil(left)
                renderer.lines["verify"] = (
                    f"Waiting {seconds} seconds to verify that tasks are stable..."
                )
            display.show(renderer.frame())
            sleep(interval)
    except KeyboardInterrupt:
        return Result(False, interrupted=True)


def interrupted_hint(service: str) -> str:
    return (
        "Operation continuing in background.\n"
        f"Use `pyswarm service ps --no-trunc {service}` to check progress."
    )

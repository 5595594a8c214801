"""Daemon wiring between the engine and swarm mode: tasks, task logs, image pinning.

The one place (with swarmnode) where the agent's engine meets the manager: a manager
pins a service's image by pushing a local-only image to its own cluster registry, so
every node pulls exactly the bytes the manager has (docker would warn that nodes may
run different versions); the agent runs its tasks on the engine and serves their logs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

from agent.engine import Engine
from agent.images.reference import parse_reference
from agent.registry.service import pull, push
from agent.swarm.agent import LogSource, SwarmAgent
from agent.swarm.container import EngineExecutor
from agent.swarm.tasklogs import task_logs
from agent.swarm.worker import Worker
from api import engine_pb2
from api import swarm_pb2 as swarm
from api.errors import NotFound, PyswarmError

log = logging.getLogger(__name__)


def start_worker(engine: Engine, agent: SwarmAgent, *, node_id: str, hostname: str) -> Worker:
    """The node's task worker on this engine, reporting through `agent`. Containers
    of tasks it ran before a daemon restart are adopted, not started again."""
    executor = EngineExecutor(engine, node_hostname=hostname)
    worker = Worker(executor, report=agent.report, node_id=node_id)
    agent.tasks = worker
    return worker


def remove_all_tasks(worker: Worker, *, timeout: float) -> None:
    """On `swarm leave`: stop and remove every task container (as docker does); a
    daemon that merely stops leaves them running for live restore instead."""
    import time

    worker.assign([], full=True)
    deadline = time.monotonic() + timeout
    while worker.executor.existing() and time.monotonic() < deadline:
        time.sleep(0.1)


def pin_image(engine: Engine, image: str, *, registry: str) -> str:
    """The reference every node will pull for `image`, pinned by digest when possible.

    - already pinned (`name@sha256:...`): as is;
    - in this manager's image store: pushed to the cluster registry (`registry`, the
      manager's HOST:5000) and pinned there;
    - named with a registry: pulled from it here, and pinned to the digest it serves;
    - otherwise (or if that pull fails): as is; each node pulls it, and a node that
      cannot rejects the task with the pull error (shown by `service ps`).
    """
    ref = parse_reference(image)
    if ref.digest is not None:
        return image
    try:
        engine.images.resolve(image)
    except NotFound:
        return _pinned_remote(engine, image) if ref.registry else image
    target = f"{registry}/{ref.repository}:{ref.tag or 'latest'}"
    engine.images.tag(image, target)
    digest = ""
    try:
        for progress in push(
            engine, engine_pb2.ImagePushRequest(reference=target), cancelled=lambda: False
        ):
            if progress.error:
                raise PyswarmError(progress.error)
            digest = progress.digest or digest
    except PyswarmError as exc:
        log.warning("image %s not pushed to the cluster registry: %s", image, exc)
        return image
    return f"{registry}/{ref.repository}@{digest}" if digest else image


def _pinned_remote(engine: Engine, image: str) -> str:
    request = engine_pb2.ImagePullRequest(reference=image)
    try:
        for progress in pull(engine, request, cancelled=lambda: False):
            if progress.error:
                raise PyswarmError(progress.error)
        pulled = engine.images.resolve(image)
    except PyswarmError as exc:
        log.info("image %s not resolved here (%s): the nodes will pull it", image, exc)
        return image
    return f"{parse_reference(image).name}@{pulled.manifest_digest}"


def log_source(engine: Engine, node_id: str) -> LogSource:
    """The agent's LogSource over this engine's task containers."""

    def source(sub: swarm.LogSubscription, stop: threading.Event) -> Iterator[swarm.LogMessage]:
        for task_id in sub.task_ids:
            if stop.is_set():
                return
            try:
                lines = task_logs(
                    engine, task_id, follow=False, tail=sub.tail, since=sub.since, stop=stop
                )
                yield from _messages(sub.id, task_id, node_id, lines)
            except NotFound as exc:
                yield swarm.LogMessage(subscription_id=sub.id, task_id=task_id, error=str(exc))
        if sub.follow:
            yield from _follow_all(engine, sub, node_id, stop)

    return source


def _messages(
    sub_id: str, task_id: str, node_id: str, lines: Iterator[tuple[str, float, bytes]]
) -> Iterator[swarm.LogMessage]:
    for stream, timestamp, data in lines:
        yield swarm.LogMessage(
            subscription_id=sub_id,
            task_id=task_id,
            node_id=node_id,
            stream=stream,
            timestamp=timestamp,
            data=data,
        )


def _follow_all(
    engine: Engine, sub: swarm.LogSubscription, node_id: str, stop: threading.Event
) -> Iterator[swarm.LogMessage]:
    """New lines of every task, interleaved as they come: one reader thread per task
    feeding one queue (a follow has no end but `stop`)."""
    import queue

    lines: queue.Queue[swarm.LogMessage] = queue.Queue(maxsize=10_000)

    def read(task_id: str) -> None:
        try:
            follow = task_logs(engine, task_id, follow=True, tail=0, since=0.0, stop=stop)
            for message in _messages(sub.id, task_id, node_id, follow):
                lines.put(message)
        except NotFound:
            return

    for task_id in sub.task_ids:
        threading.Thread(target=read, args=(task_id,), name="task-logs", daemon=True).start()
    while not stop.is_set():
        try:
            yield lines.get(timeout=0.5)
        except queue.Empty:
            continue

"""The real executor: one container per task on this node's engine.

The container is docker's: named `<service>.<slot>.<task id>`, carrying the swarm
labels (that is how a restarted agent finds it again: `existing()`, and every action
looks the container up by its task-id label before making one, so nothing is ever
started twice). The restart policy is "no": restarting is the manager's job, with a
new task.

Network: "bridge" by default, what `pyswarm run` uses: every task gets its own
namespace and address on the node's bridge (docker's docker_gwbridge: the way out),
so replicas on one node never collide on ports as they would with "host". The task's
overlay networks come on top, as eth1, eth2, ... (`overlay_attachments`), with the
embedded DNS; host-mode published ports are the bridge's `-p` publishing. The executor
takes the mode as a parameter so tests can use "none" on an engine without a bridge
driver.

Blocking is confined to this module's own threads: one exit watcher per running
container (`engine.containers.wait_exit`) and one health monitor per checked
container; both only call the worker's `wake`.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterable

from api import engine_pb2
from api import objects_pb2 as objects
from api.errors import AlreadyExists, Conflict, InvalidArgument, NotFound, PyswarmError
from api.networks import overlay_attachment
from api.tasks import DEFAULT_STOP_GRACE, LABEL_TASK_ID, expand, labels, task_name

from ..containers import prepare
from ..containers.record import ContainerRecord, State
from ..engine import Engine
from . import files, health
from .exec import ExitInfo, FileSource, Health, RejectedError, TaskError, Wake

WATCH_POLL = 1.0  # seconds; how often an exit watcher notices close()


def stop_grace(spec: objects.ContainerSpec) -> float:
    return spec.stop_grace_period if spec.HasField("stop_grace_period") else DEFAULT_STOP_GRACE


def container_config(
    task: objects.Task,
    *,
    network: str,
    node_hostname: str = "",
    extra_mounts: Iterable[engine_pb2.Mount] = (),
) -> engine_pb2.ContainerConfig:
    """What the engine is asked to create for `task` (pure)."""
    spec = task.spec.container
    limits = task.spec.resources.limits
    config = engine_pb2.ContainerConfig(
        name=task_name(task),
        image=spec.image,
        entrypoint=list(spec.command),
        entrypoint_set=spec.command_set or bool(spec.command),
        cmd=list(spec.args),
        env=[expand(e, task, node_hostname=node_hostname) for e in spec.env],
        workdir=spec.dir,
        user=spec.user,
        hostname=expand(spec.hostname, task, node_hostname=node_hostname),
        read_only=spec.read_only,
        cap_add=list(spec.cap_add),
        cap_drop=list(spec.cap_drop),
        stop_signal=spec.stop_signal,
        stop_timeout=math.ceil(stop_grace(spec)),
        network=network,
        restart=engine_pb2.RestartPolicy(name="no"),
        resources=engine_pb2.Resources(
            memory_bytes=limits.memory_bytes, nano_cpus=limits.nano_cpus, pids_limit=limits.pids
        ),
    )
    config.labels.update(spec.labels)
    config.labels.update(labels(task))  # after the user's: the swarm's own win
    for m in spec.mounts:
        config.mounts.add(
            type=m.type or "volume",
            source=expand(m.source, task, node_hostname=node_hostname),
            target=m.target,
            read_only=m.read_only,
            tmpfs_size=m.tmpfs_size,
        )
    config.mounts.extend(extra_mounts)
    config.overlays.extend(overlay_attachments(task))
    config.dns.extend(spec.dns_nameservers)
    config.dns_search.extend(spec.dns_search)
    config.dns_options.extend(spec.dns_options)
    for line in spec.hosts:  # "IP NAME..." as docker stores --host
        address, *names = line.split()
        config.extra_hosts.extend(f"{name}:{address}" for name in names)
    for port in task.endpoint.ports:
        if port.publish_mode == "host":
            config.ports.add(
                host_port=port.published_port,
                container_port=port.target_port,
                protocol=port.protocol or "tcp",
            )
    return config


def overlay_attachments(task: objects.Task) -> list[engine_pb2.OverlayAttachment]:
    """The task's overlay networks as the engine's network driver needs them."""
    return [overlay_attachment(a) for a in task.networks]


class EngineExecutor:
    def __init__(self, engine: Engine, *, network: str = "bridge", node_hostname: str = "") -> None:
        self.engine = engine
        self.network = network
        self.node_hostname = node_hostname
        self.files_root = files.files_root(engine.options.data_root)
        # One pull per image at a time: 100 new tasks of a service must not pull its
        # image 100 times over; the others wait and find it present.
        self._pulls: dict[str, threading.Lock] = {}
        self._pulls_lock = threading.Lock()

    def pull_lock(self, image: str) -> threading.Lock:
        with self._pulls_lock:
            return self._pulls.setdefault(image, threading.Lock())

    def controller(self, task: objects.Task, *, files: FileSource) -> ContainerController:
        return ContainerController(self, task, files=files)

    def existing(self) -> set[str]:
        return {
            r.config.get("labels", {}).get(LABEL_TASK_ID, "")
            for r in self.engine.containers.records(all=True)
        } - {""}

    def find(self, task_id: str) -> ContainerRecord | None:
        for record in self.engine.containers.records(all=True):
            if record.config.get("labels", {}).get(LABEL_TASK_ID) == task_id:
                return record
        return None


class ContainerController:
    def __init__(self, executor: EngineExecutor, task: objects.Task, *, files: FileSource) -> None:
        self.executor = executor
        self.engine = executor.engine
        self.task = task
        self.source = files
        self.files = _task_files(executor, task.meta.id)
        self._lock = threading.Lock()
        self._wake: Wake | None = None
        self._watcher: threading.Thread | None = None
        self._monitor: health.HealthMonitor | None = None
        self._check: health.HealthSettings | None = None
        self._closed = threading.Event()

    def _record(self) -> ContainerRecord | None:
        return self.executor.find(self.task.meta.id)

    def _required(self) -> ContainerRecord:
        record = self._record()
        if record is None:
            raise TaskError(f"No such container: {task_name(self.task)}")
        return record

    # ---- prepare ---------------------------------------------------------------

    def prepare(self) -> None:
        if self._record() is not None:
            return  # made by an earlier attempt, or by the agent before a restart
        image = self.task.spec.container.image
        self._ensure_image(image)
        mounts = self.files.create(files.plan(self.task), data=self._file_data)
        config = container_config(
            self.task,
            network=self.executor.network,
            node_hostname=self.executor.node_hostname,
            extra_mounts=mounts,
        )
        try:
            self.engine.containers.create(config)
        except AlreadyExists as exc:
            self.files.cleanup()
            raise TaskError(exc.message) from None
        except (InvalidArgument, NotFound) as exc:
            self.files.cleanup()
            raise RejectedError(exc.message) from None
        except BaseException:
            self.files.cleanup()
            raise

    def _ensure_image(self, image: str) -> None:
        if self._present(image):
            return
        with self.executor.pull_lock(image):
            if not self._present(image):  # pulled by another task while we waited
                self._pull(image)

    def _present(self, image: str) -> bool:
        try:
            self.engine.images.resolve(image)
        except NotFound:
            return False
        return True

    def _pull(self, image: str) -> None:
        # The same code path as `pyswarm pull` (and `run`'s on-demand pull).
        from ..registry import service

        request = engine_pb2.ImagePullRequest(reference=image)
        try:
            for _ in service.pull(self.engine, request, cancelled=self._closed.is_set):
                pass
        except NotFound:
            raise RejectedError(f"No such image: {image}") from None
        except PyswarmError as exc:
            raise RejectedError(f"pulling {image}: {exc.message}") from None

    def _file_data(self, planned: files.PlannedFile) -> bytes:
        found = (
            self.source.secret(planned.ref.id)
            if planned.kind == "secret"
            else self.source.config(planned.ref.id)
        )
        if found is None:
            raise RejectedError(f"{planned.kind} {planned.ref.name} not found")
        return bytes(found.spec.data)

    # ---- start, wait, health ----------------------------------------------------

    def start(self) -> None:
        record = self._required()
        if record.state != State.RUNNING:
            try:
                self.engine.containers.start(record.id)
            except PyswarmError as exc:
                raise TaskError(f"starting container failed: {exc.message}") from None
        self._watch(record)

    def wait(self, *, wake: Wake) -> ExitInfo | None:
        record = self._required()
        with self._lock:
            self._wake = wake
        if record.state == State.CREATED:
            return None
        if record.state in (State.RUNNING, State.RESTARTING):
            self._watch(record)  # adopts a container started by a previous agent
            return None
        return ExitInfo(record.exit_code, error=record.error if record.exit_code else "")

    def health(self) -> Health:
        if self._check is None:
            return Health.NONE
        return self._monitor.state if self._monitor else Health.STARTING

    def _watch(self, record: ContainerRecord) -> None:
        with self._lock:
            if self._watcher is not None or self._closed.is_set():
                return
            self._watcher = threading.Thread(
                target=self._wait_exit, args=(record.id,), name="task-exit", daemon=True
            )
            self._watcher.start()
            self._start_health(record)

    def _start_health(self, record: ContainerRecord) -> None:
        image = self.engine.images.resolve(record.image_id)
        image_check = prepare.image_config(image.config).get("Healthcheck")
        self._check = health.settings(self.task.spec.container.healthcheck, image_check)
        if self._check is None:
            return
        self._monitor = health.HealthMonitor(
            self._check,
            probe=health.exec_probe(self.engine.containers.exec, record.id),
            on_change=lambda _: self._notify(),
        )
        self._monitor.start()

    def _wait_exit(self, cid: str) -> None:
        while not self._closed.is_set():
            try:
                record = self.engine.containers.wait_exit(cid, timeout=WATCH_POLL)
            except NotFound:
                break
            if record.state != State.RUNNING:
                break
        self._notify()

    def _notify(self) -> None:
        with self._lock:
            wake = self._wake
        if wake is not None and not self._closed.is_set():
            wake()

    # ---- shutdown, remove ----------------------------------------------------------

    def shutdown(self) -> None:
        record = self._record()
        if self._monitor is not None:
            self._monitor.stop()
        if record is None or record.state != State.RUNNING:
            return
        grace = math.ceil(stop_grace(self.task.spec.container))
        try:
            self.engine.containers.stop(record.id, timeout=grace)
        except PyswarmError as exc:
            raise TaskError(f"stopping container failed: {exc.message}") from None

    def terminate(self) -> None:
        record = self._record()
        if record is not None:
            with contextlib.suppress(Conflict):  # not running
                self.engine.containers.kill(record.id, signal="KILL")

    def remove(self) -> None:
        self.close()
        record = self._record()
        if record is not None:
            try:
                self.engine.containers.remove(record.id, force=True, volumes=True)
            except NotFound:
                pass
            except PyswarmError as exc:
                raise TaskError(f"removing container failed: {exc.message}") from None
        self.files.cleanup()

    def close(self) -> None:
        self._closed.set()
        if self._monitor is not None:
            self._monitor.stop()


def _task_files(executor: EngineExecutor, task_id: str) -> files.TaskFiles:
    return files.TaskFiles(executor.files_root, task_id)

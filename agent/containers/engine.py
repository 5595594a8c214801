"""The container lifecycle: create, start, stop, kill, remove, exec, and live restore.

Invariants:
- Every state change is written to the container's record on disk before the
  call returns; a restarted daemon rebuilds its whole view from those records plus
  what conmon left (pid files, exit files), and adopts containers still running.
- A start either completes or undoes what it made, in reverse order: runtime
  container, network attachment, rootfs mount. The same teardown runs when a
  container exits, so no mount, netns, veth, rule, cgroup or conmon outlives it.
- One lock per container serialises its operations; the engine lock only guards
  the id/name maps. Waiters block on a condition notified after each exit.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import shutil
import signal as signals
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from api import engine_pb2
from api.errors import (
    AlreadyExists,
    Conflict,
    EngineFailure,
    InvalidArgument,
    NotFound,
    PyswarmError,
)

from . import cgroups, logs, observe, prepare, restart, rootfs, spec
from .config import NETWORK_MODES, Images, Volumes, generate_name, parse_signal, validate_config
from .monitor import ExitMonitor
from .network import Attachment, Isolated, NetworkDriver
from .record import ContainerRecord, NetworkState, State, config_to_json, port_to_json
from .runtime import ContainerPaths, Runtime, is_conmon

log = logging.getLogger(__name__)

DEFAULT_STOP_TIMEOUT = 10
DEFAULT_CGROUP_PARENT = "/pyswarm"
TOMBSTONES = 256


@dataclass
class _Slot:
    """In-memory companion of a record: its lock and restart bookkeeping."""

    record: ContainerRecord
    lock: threading.RLock
    exited: threading.Event = field(default_factory=threading.Event)
    backoff: float = 0.0
    timer: threading.Timer | None = None
    # Nothing of a run is held: true for new and restored non-running containers
    # (records are saved only after teardown); false from a start until its exit's
    # teardown succeeds.
    released: bool = True

    def sleep_until_exit(self, seconds: float) -> None:
        self.exited.wait(seconds)


class ContainerEngine:
    def __init__(
        self,
        root: Path,
        *,
        runtime: Runtime,
        images: Images,
        volumes: Volumes,
        network: NetworkDriver,
        cgroup_parent: str = DEFAULT_CGROUP_PARENT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self.cgroup_parent = cgroup_parent.rstrip("/")
        self.runtime = runtime
        self.images = images
        self.volumes = volumes
        self.network = network
        self.clock = clock
        root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._slots: dict[str, _Slot] = {}
        # Recently removed containers, by full id, so that `run --rm` can still read
        # the exit code of a container the daemon removed as soon as it exited.
        self._tombstones: dict[str, ContainerRecord] = {}
        self._closed = False
        self._monitor = ExitMonitor(self._handle_exit)

    # ---- lookup ------------------------------------------------------------

    def _dir(self, cid: str) -> Path:
        return self.root / cid

    def _cgroup(self, cid: str) -> str:
        return f"{self.cgroup_parent}/{cid}"

    def _paths(self, cid: str) -> ContainerPaths:
        d = self._dir(cid)
        return ContainerPaths(
            bundle=d / "bundle",
            log=d / "ctr.log",
            exit_dir=d / "exits",
            pidfile=d / "pid",
            conmon_pidfile=d / "conmon.pid",
            socket_dir=d / "sock",
        )

    def _find(self, ref: str) -> _Slot:
        ref = ref.lstrip("/")
        with self._lock:
            if ref in self._slots:
                return self._slots[ref]
            for slot in self._slots.values():
                if slot.record.name == ref:
                    return slot
            matches = [s for cid, s in self._slots.items() if ref and cid.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidArgument(f"multiple IDs found with provided prefix: {ref}")
        raise NotFound(f"No such container: {ref}")

    def get(self, ref: str) -> ContainerRecord:
        return self._find(ref).record

    def records(self, *, all: bool = False) -> list[ContainerRecord]:
        with self._lock:
            records = [s.record for s in self._slots.values()]
        records = [r for r in records if all or r.running]
        return sorted(records, key=lambda r: r.created, reverse=True)

    def writable_layer(self, ref: str) -> Path:
        """The container's writable layer (overlayfs upper dir: its changes to the
        image, deletions as overlay whiteouts). For `build` and `commit`."""
        return self._dir(self._find(ref).record.id) / "upper"

    def image_users(self, image_id: str) -> list[str]:
        with self._lock:
            return [cid for cid, s in self._slots.items() if s.record.image_id == image_id]

    def volume_users(self, name: str) -> list[str]:
        with self._lock:
            return [
                cid
                for cid, s in self._slots.items()
                if any(
                    m.get("type") == "volume" and m.get("source") == name
                    for m in s.record.config.get("mounts", [])
                )
                or name in s.record.anonymous_volumes
            ]

    # ---- create ------------------------------------------------------------

    def create(self, config: engine_pb2.ContainerConfig) -> tuple[str, list[str]]:
        warnings: list[str] = []
        name = config.name.lstrip("/")
        validate_config(config)
        image = self.images.resolve(config.image)
        image_cfg = prepare.image_config(image.config)
        args = spec.command_line(
            image_entrypoint=image_cfg.get("Entrypoint") or [],
            image_cmd=image_cfg.get("Cmd") or [],
            entrypoint=list(config.entrypoint),
            entrypoint_set=config.entrypoint_set,
            cmd=list(config.cmd),
        )
        if not args:
            raise InvalidArgument("No command specified")
        if config.network == "host" and config.ports:
            warnings.append("Published ports are discarded when using host network mode")
            del config.ports[:]
        cid = secrets.token_hex(32)
        with self._lock:
            name = name or generate_name({s.record.name for s in self._slots.values()})
            if any(s.record.name == name for s in self._slots.values()):
                holder = next(s.record.id for s in self._slots.values() if s.record.name == name)
                raise AlreadyExists(
                    f'Conflict. The container name "/{name}" is already in use by container '
                    f'"{holder}". You have to remove (or rename) that container to be able to '
                    "reuse that name."
                )
            record = ContainerRecord(
                id=cid,
                name=name,
                image=config.image,
                image_id=image.id,
                config=config_to_json(config),
                created=self.clock(),
                path=args[0],
                args=args,
            )
            self._slots[cid] = _Slot(record=record, lock=threading.RLock())
        try:
            self._make_dirs(record, image_cfg)
        except BaseException:
            with self._lock:
                del self._slots[cid]
            shutil.rmtree(self._dir(cid), ignore_errors=True)
            raise
        return cid, warnings

    def _make_dirs(self, record: ContainerRecord, image_cfg: dict[str, Any]) -> None:
        d = self._dir(record.id)
        for sub in ("bundle/rootfs", "upper", "work", "exits", "sock", "exec"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        cfg = record.spec()
        for m in cfg.mounts:
            if m.type == "volume":
                if m.source:
                    self.volumes.create(m.source)
                else:
                    record.anonymous_volumes.append(self.volumes.create(None, anonymous=True).name)
        covered = {m.target.rstrip("/") for m in cfg.mounts}
        for target in prepare.image_volumes(image_cfg):
            if target.rstrip("/") not in covered:
                record.anonymous_volumes.append(self.volumes.create(None, anonymous=True).name)
        record.save(d)

    # ---- start -------------------------------------------------------------

    def start(self, ref: str) -> None:
        slot = self._find(ref)
        with slot.lock:
            if slot.record.state == State.RUNNING:
                return
            self._cancel_restart(slot)
            slot.record.manually_stopped = False
            try:
                self._start_locked(slot)
            except PyswarmError:
                # As docker's daemon does: a --rm container that cannot start is removed.
                if slot.record.config.get("auto_remove"):
                    self.remove(slot.record.id, force=True, volumes=True)
                raise

    def _start_locked(self, slot: _Slot) -> None:
        record = slot.record
        cid = record.id
        paths = self._paths(cid)
        image = self.images.resolve(record.image_id)
        image_cfg = prepare.image_config(image.config)
        undo: list[Callable[[], None]] = []
        slot.released = False
        try:
            for stale in paths.exit_dir.iterdir():
                stale.unlink()
            lowers = self.images.layer_dirs(image)
            target = paths.bundle / "rootfs"
            rootfs.mount_overlay(
                lowers=lowers, upper=self._dir(cid) / "upper", work=self._dir(cid) / "work",
                target=target,
            )  # fmt: skip
            undo.append(lambda: rootfs.unmount(target))
            cfg = record.spec()
            mounts = prepare.resolve_mounts(record, image_cfg, volumes=self.volumes)
            prepare.copy_up(target, mounts)
            attachment = self._attach(cid, cfg)
            undo.append(lambda: self.network.detach(cid))
            files = prepare.write_etc_files(
                self._dir(cid),
                hostname=cfg.hostname or cid[:12],
                ip_address=cfg.overlays[0].address.split("/")[0]
                if cfg.overlays
                else attachment.ip_address,
                network_mode=cfg.network or "bridge",
                dns=prepare.DnsConfig(
                    nameservers=list(cfg.dns),
                    search=list(cfg.dns_search),
                    options=list(cfg.dns_options),
                    embedded=bool(cfg.overlays) or cfg.network not in NETWORK_MODES,
                ),
                extra_hosts=list(cfg.extra_hosts),
            )
            oci = prepare.build(
                record,
                root=target,
                image_cfg=image_cfg,
                mounts=mounts,
                files=files,
                cgroups_path=self._cgroup(cid),
                netns_path=attachment.netns_path,
            )
            prepare.write_config(paths.bundle, oci)
            launched = self.runtime.launch(cid, paths)
            undo.append(lambda: self.runtime.delete(cid))
            self.runtime.start(cid)
        except PyswarmError as exc:
            self._undo(undo)
            record.error = exc.message
            if hasattr(exc, "exit_code"):
                record.exit_code = int(exc.exit_code)
            record.save(self._dir(cid))
            raise
        except Exception as exc:
            self._undo(undo)
            record.error = str(exc)
            record.save(self._dir(cid))
            raise EngineFailure(f"starting container {cid[:12]}: {exc}") from exc
        slot.exited.clear()
        record.state = State.RUNNING
        record.pid = launched.pid
        record.conmon_pid = launched.conmon_pid
        record.started_at = self.clock()
        record.error = ""
        record.network = NetworkState(
            mode=cfg.network or "bridge",
            netns_path=attachment.netns_path,
            ip_address=attachment.ip_address,
            gateway=attachment.gateway,
            ports=[port_to_json(p) for p in attachment.ports],
        )
        record.save(self._dir(cid))
        self._monitor.watch(cid, launched.conmon_pid)

    def _attach(self, cid: str, cfg: engine_pb2.ContainerConfig) -> Attachment:
        """`none` needs no driver: the runtime makes the namespace and brings up lo."""
        if cfg.network == "none" and not cfg.overlays:
            return Isolated()
        return self.network.attach(
            cid, mode=cfg.network or "bridge", ports=cfg.ports, overlays=cfg.overlays
        )

    @staticmethod
    def _undo(steps: list[Callable[[], None]]) -> None:
        for step in reversed(steps):
            try:
                step()
            except Exception:
                log.exception("undoing a failed start")

    # ---- exit, stop, kill --------------------------------------------------

    def _read_exit_code(self, cid: str) -> int | None:
        exit_file = self._paths(cid).exit_dir / cid
        try:
            return int(exit_file.read_text().strip() or "0")
        except (OSError, ValueError):
            return None

    def _teardown(self, record: ContainerRecord) -> None:
        """Release what a running container holds; each step idempotent."""
        cid = record.id
        self.runtime.delete(cid)
        rootfs.unmount(self._paths(cid).bundle / "rootfs")
        self.network.detach(cid)
        try:
            cgroups.remove_cgroup(self._cgroup(cid))
        except OSError as exc:
            raise EngineFailure(f"removing the cgroup of {cid[:12]}: {exc}") from exc
        for process_file in (self._dir(cid) / "exec").glob("*.json"):
            process_file.unlink(missing_ok=True)

    def _handle_exit(self, cid: str) -> None:
        """Record an exit, wake waiters, then release what the container held.

        Order: the exit is visible to waiters (and `logs -f` ends) before teardown,
        but the record on disk changes only after it, and the slot lock is held
        throughout, so a crash mid-teardown is redone by the next daemon's restore
        and no start or remove can interleave."""
        with self._lock:
            slot = self._slots.get(cid)
        if slot is None:
            return
        with slot.lock:
            record = slot.record
            if record.state not in (State.RUNNING, State.RESTARTING):
                return
            code = self._read_exit_code(cid)
            if code is None:
                # conmon died without recording an exit: the process may still be
                # running; make sure it is not before declaring the container dead.
                self._kill_quietly(cid, "KILL")
                code, record.error = 137, "conmon exited without an exit code"
            ran_for = self.clock() - record.started_at
            again = self._record_exit(slot, code)
            with self._changed:
                self._changed.notify_all()
            try:
                self._teardown(record)
                slot.released = True
            except PyswarmError as exc:
                log.warning("cleaning up container %s: %s", cid[:12], exc.message)
            if again:
                slot.backoff = restart.backoff(slot.backoff, ran_for=ran_for)
                self._schedule_restart(slot, slot.backoff)
            record.save(self._dir(cid))
        if record.config.get("auto_remove") and not again:
            try:
                self.remove(cid, force=True, volumes=True)
            except PyswarmError as exc:
                log.warning("auto-removing %s: %s", cid[:12], exc.message)

    def _record_exit(self, slot: _Slot, code: int) -> bool:
        """Mark the exit in memory; return whether the restart policy restarts it."""
        record = slot.record
        record.exit_code = code
        record.finished_at = self.clock()
        record.pid = record.conmon_pid = 0
        policy = restart.Policy(
            record.config.get("restart", {}).get("name", "no"),
            int(record.config.get("restart", {}).get("max_retries", 0)),
        )
        again = not self._closed and restart.should_restart(
            policy,
            exit_code=code,
            restart_count=record.restart_count,
            manually_stopped=record.manually_stopped,
        )
        record.state = State.RESTARTING if again else State.EXITED
        slot.exited.set()
        return again

    def _schedule_restart(self, slot: _Slot, delay: float) -> None:
        def fire() -> None:
            with slot.lock:
                if slot.record.state != State.RESTARTING or self._closed:
                    return
                slot.record.restart_count += 1
                try:
                    self._start_locked(slot)
                except PyswarmError as exc:
                    log.warning("restarting %s failed: %s", slot.record.id[:12], exc.message)
                    slot.record.state = State.EXITED
                    slot.record.save(self._dir(slot.record.id))
            with self._changed:
                self._changed.notify_all()

        slot.timer = threading.Timer(delay, fire)
        slot.timer.daemon = True
        slot.timer.start()

    def _cancel_restart(self, slot: _Slot) -> None:
        if slot.timer is not None:
            slot.timer.cancel()
            slot.timer = None
        if slot.record.state == State.RESTARTING:
            slot.record.state = State.EXITED
            slot.record.save(self._dir(slot.record.id))

    def _kill_quietly(self, cid: str, sig: str) -> None:
        with contextlib.suppress(PyswarmError):
            self.runtime.kill(cid, sig)

    def wait_exit(self, ref: str, *, timeout: float | None = None) -> ContainerRecord:
        """Block until the container is not running (restarting counts as not running).

        A container removed since (--rm) answers from its tombstone, by full id."""
        with self._lock:
            if ref in self._tombstones:
                return self._tombstones[ref]
        slot = self._find(ref)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while slot.record.state == State.RUNNING:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._changed.wait(timeout=left if left is not None else 1.0)
        return slot.record

    def wait_removed(self, cid: str, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while cid in self._slots and time.monotonic() < deadline:
                self._changed.wait(timeout=deadline - time.monotonic())

    def stop(self, ref: str, *, timeout: int = -1) -> None:
        slot = self._find(ref)
        with slot.lock:
            record = slot.record
            record.manually_stopped = True
            self._cancel_restart(slot)
            record.save(self._dir(record.id))
            if record.state != State.RUNNING:
                return
            cfg = record.spec()
            image_cfg = prepare.image_config(self.images.resolve(record.image_id).config)
            sig = cfg.stop_signal or image_cfg.get("StopSignal") or "SIGTERM"
            grace = timeout if timeout >= 0 else (
                cfg.stop_timeout if cfg.stop_timeout >= 0 else DEFAULT_STOP_TIMEOUT
            )  # fmt: skip
            self._kill_quietly(record.id, str(parse_signal(sig)))
        if self.wait_exit(record.id, timeout=grace).state == State.RUNNING:
            self._kill_quietly(record.id, "KILL")
            self.wait_exit(record.id, timeout=30)
        with slot.lock:  # the exit's teardown has finished once we hold it
            pass

    def restart(self, ref: str, *, timeout: int = -1) -> None:
        self.stop(ref, timeout=timeout)
        self.start(ref)

    def kill(self, ref: str, *, signal: str = "KILL") -> None:
        slot = self._find(ref)
        num = parse_signal(signal or "KILL")
        with slot.lock:
            record = slot.record
            if record.state != State.RUNNING:
                raise Conflict(
                    f"Cannot kill container: {ref}: Container {record.id} is not running"
                )
            if num in (signals.SIGKILL, signals.SIGTERM):
                record.manually_stopped = True
                record.save(self._dir(record.id))
            self.runtime.kill(record.id, str(num))

    # ---- remove, prune -----------------------------------------------------

    def remove(self, ref: str, *, force: bool = False, volumes: bool = False) -> None:
        slot = self._find(ref)
        record = slot.record
        if record.state == State.RUNNING:
            if not force:
                raise Conflict(
                    f"You cannot remove a running container {record.id}. Stop the container "
                    "before attempting removal or force remove"
                )
            self.kill(record.id, signal="KILL")
            self.wait_exit(record.id, timeout=30)
        with slot.lock:
            self._cancel_restart(slot)
            if slot.record.state == State.RUNNING:
                raise EngineFailure(f"container {record.id[:12]} did not stop")
            with self._lock:
                if self._slots.get(record.id) is not slot:
                    return
                del self._slots[record.id]
                self._tombstones[record.id] = record
                while len(self._tombstones) > TOMBSTONES:
                    self._tombstones.pop(next(iter(self._tombstones)))
            if not slot.released:  # a failed start, or a teardown that failed
                self._teardown(record)
            shutil.rmtree(self._dir(record.id), ignore_errors=True)
        if volumes:
            for name in record.anonymous_volumes:
                try:
                    self.volumes.remove(name, force=False, users=self.volume_users)
                except PyswarmError as exc:
                    log.warning("removing volume %s: %s", name, exc.message)
        with self._changed:
            self._changed.notify_all()

    def prune(self) -> list[str]:
        gone = []
        for record in self.records(all=True):
            if record.state in (State.EXITED, State.CREATED, State.DEAD):
                try:
                    self.remove(record.id)
                    gone.append(record.id)
                except PyswarmError:
                    continue
        return gone

    # ---- logs, exec, stats -------------------------------------------------

    def logs(
        self, request: engine_pb2.LogsRequest, *, cancelled: Callable[[], bool] = lambda: False
    ) -> Iterator[logs.LogRecord]:
        slot = self._find(request.id)
        yield from observe.read(
            self._paths(slot.record.id).log,
            request,
            is_running=lambda: (
                slot.record.state == State.RUNNING and not self._closed and not cancelled()
            ),
            # Wakes at once when the container exits, instead of at the next poll.
            sleep=slot.sleep_until_exit,
        )

    def exec(self, request: engine_pb2.ExecRequest) -> subprocess.Popen[bytes]:
        record = self._find(request.id).record
        if not request.cmd:
            raise InvalidArgument("No exec command specified")
        if record.state != State.RUNNING:
            raise Conflict(f"Container {record.id} is not running")
        return observe.start_exec(
            self.runtime,
            record,
            request,
            root=self._paths(record.id).bundle / "rootfs",
            image_cfg=prepare.image_config(self.images.resolve(record.image_id).config),
            exec_dir=self._dir(record.id) / "exec",
        )

    def stats(self, ref: str, *, interval: float = 0.25) -> engine_pb2.Stats:
        record = self._find(ref).record
        if record.state != State.RUNNING:
            return engine_pb2.Stats(id=record.id, name=record.name)
        return observe.stats(record, self._cgroup(record.id), interval=interval)

    # ---- live restore ------------------------------------------------------

    def restore(self) -> None:
        """Adopt what a previous daemon left: running containers, and exits missed."""
        records = []
        for d in sorted(self.root.iterdir()):
            if not (d / "container.json").exists():
                shutil.rmtree(d, ignore_errors=True)  # a create that never completed
                continue
            try:
                records.append(ContainerRecord.load(d))
            except (OSError, ValueError, TypeError, KeyError) as exc:
                log.warning("skipping unreadable container record %s: %s", d.name, exc)
        with self._lock:
            for record in records:
                self._slots[record.id] = _Slot(record=record, lock=threading.RLock())
        live = [r.id for r in records if r.running and is_conmon(r.conmon_pid, r.id)]
        self.network.restore(live)
        for record in records:
            if record.running and record.id in live:
                self._monitor.watch(record.id, record.conmon_pid)
            elif record.running:
                self._handle_exit(record.id)
            elif self._interrupted(record):
                self._undo_interrupted_start(record)

    def _interrupted(self, record: ContainerRecord) -> bool:
        """A start the previous daemon died in: its record never said running, but
        it may have mounted the root or launched conmon."""
        paths = self._paths(record.id)
        try:
            conmon_pid = int(paths.conmon_pidfile.read_text().strip())
        except (OSError, ValueError):
            conmon_pid = 0
        return is_conmon(conmon_pid, record.id) or rootfs.is_mountpoint(paths.bundle / "rootfs")

    def _undo_interrupted_start(self, record: ContainerRecord) -> None:
        log.warning("container %s: undoing a start interrupted by a daemon crash", record.id[:12])
        self._kill_quietly(record.id, "KILL")
        try:
            self._teardown(record)
        except PyswarmError as exc:
            log.warning("cleaning up container %s: %s", record.id[:12], exc.message)

    def close(self) -> None:
        """Stop watching; containers keep running for the next daemon to adopt."""
        self._closed = True
        with self._lock:
            slots = list(self._slots.values())
        for slot in slots:
            if slot.timer is not None:
                slot.timer.cancel()
        self._monitor.close()
        with contextlib.suppress(ValueError):  # a parent of "/" is never removed
            cgroups.remove_parent_if_empty(self.cgroup_parent)
        with self._changed:
            self._changed.notify_all()

"""The swarm agent: this node's session with the leader's dispatcher.

One thread keeps a session open: it dials the leader (a follower's refusal names the
leader in `pyswarm-leader` metadata; otherwise each known manager in turn), opens the
Session stream and heartbeats at the period the dispatcher asks for. Session
messages carry the node's own object — role and availability changes arrive that
way and are handed to `on_node` — and the list of managers, handed to
`on_managers` so a restart knows whom to dial.

Task assignments ride on the same stream and go to the task worker (`tasks`); the
worker's status reports are sent back with UpdateTaskStatus on the current session, and
all of them again at the start of every session (a new leader may have missed some).
Log subscriptions also arrive on the stream; each is answered on its own PublishLogs
call from `logs`, until it ends or is cancelled.

Certificates are renewed at a random point between 50% and 80% of their life, and
at once when the node's role changes (the new certificate carries the new role).
Renewal makes a new key and CSR; the old certificate stays in use until the new one
is saved, so a failed renewal changes nothing.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Protocol

import grpc

from api import errors, pki, ports
from api import objects_pb2 as objects
from api import swarm_pb2 as swarm
from api import swarm_pb2_grpc as swarm_grpc
from api.credentials import NodeCredentials

log = logging.getLogger(__name__)
RETRY_DELAY = 0.2
StatusUpdates = list[tuple[str, objects.TaskStatus]]


class TaskRunner(Protocol):
    """The node's task worker (agent.swarm.worker.Worker)."""

    def apply(self, message: swarm.AssignmentsMessage) -> None: ...
    def statuses(self) -> dict[str, objects.TaskStatus]: ...


# (subscription, stop) → the subscription's log messages, ending when done or stopped
LogSource = Callable[[swarm.LogSubscription, threading.Event], Iterator[swarm.LogMessage]]


class SwarmAgent:
    def __init__(
        self,
        credentials: NodeCredentials,
        *,
        managers: list[str],
        addr: str,
        description: objects.NodeDescription,
        on_node: Callable[[objects.Node], None],
        on_managers: Callable[[list[str]], None],
        rng: random.Random | None = None,
        logs: LogSource | None = None,
    ) -> None:
        self.credentials = credentials
        self.managers = list(managers)
        self.addr = addr
        self.description = description
        self.on_node = on_node
        self.on_managers = on_managers
        self.rng = rng or random.Random()
        self.connected = threading.Event()
        self._leader_hint: str | None = None
        self._stop = threading.Event()
        self._call: Any = None
        self._channel: tuple[str, int, grpc.Channel] | None = None
        self._threads: list[threading.Thread] = []
        self.tasks: TaskRunner | None = None  # set once the worker exists
        self.logs = logs
        self._current: tuple[swarm_grpc.DispatcherStub, str] | None = None
        self._send_lock = threading.Lock()
        self._unsent: dict[str, objects.TaskStatus] = {}
        self._log_streams: dict[str, threading.Event] = {}
        # Overlay networks as the leader sees them (manager.netviews), for the node's
        # network driver; set by the daemon's wiring.
        self.on_networks: Callable[[swarm.NetworkViews], None] | None = None
        self._views_seen: tuple[str, int] = ("", 0)  # (session id, version)

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._session_loop, name="agent-session", daemon=True),
            threading.Thread(target=self._renewal_loop, name="agent-renewal", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        call = self._call
        if call is not None:
            call.cancel()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)
        if self._channel is not None:
            self._channel[2].close()

    @property
    def leader(self) -> str | None:
        """The manager this agent last had a session with: the leader, as far as known."""
        return self._leader_hint

    # ---- channels --------------------------------------------------------------

    def _dispatcher(self, addr: str) -> swarm_grpc.DispatcherStub:
        generation = self.credentials.generation
        if self._channel is None or self._channel[:2] != (addr, generation):
            if self._channel is not None:
                self._channel[2].close()
            key, cert, ca = self.credentials.triple()
            channel = pki.cluster_channel(addr, ca, cert_pem=cert, key_pem=key)
            self._channel = (addr, generation, channel)
        return swarm_grpc.DispatcherStub(self._channel[2])

    def _candidates(self) -> list[str]:
        hint = self._leader_hint
        rest = [m for m in self.managers if m != hint]
        self.rng.shuffle(rest)
        return ([hint] if hint else []) + rest

    # ---- the session -------------------------------------------------------------

    def _session_loop(self) -> None:
        while not self._stop.is_set():
            for addr in self._candidates():
                if self._stop.is_set():
                    return
                try:
                    self._session(addr)
                except grpc.RpcError as exc:
                    self._leader_hint = leader_hint(exc)
                    log.debug("session with %s ended: %s", addr, describe(exc))
                finally:
                    self.connected.clear()
                if self._leader_hint:
                    break  # dial the leader next, not the next manager in the list
            self._stop.wait(RETRY_DELAY)

    def _session(self, addr: str) -> None:
        stub = self._dispatcher(addr)
        call = stub.Session(
            swarm.SessionRequest(description=self.description, addr=self.addr), timeout=None
        )
        self._call = call
        beat: threading.Thread | None = None
        try:
            for message in call:
                if beat is None:
                    self._leader_hint = addr
                    self._current = (stub, message.session_id)
                    self.connected.set()
                    log.info("session with the leader at %s", addr)
                    beat = threading.Thread(
                        target=self._heartbeat,
                        args=(stub, message.session_id, message.heartbeat_period, call),
                        name="agent-heartbeat",
                        daemon=True,
                    )
                    beat.start()
                self._handle(message, session_id=self._current[1] if self._current else "")
                if beat is not None and message.HasField("assignments"):
                    self._resend_all()
        finally:
            self._current = None
            call.cancel()
            if beat is not None:
                beat.join(timeout=5)

    def _heartbeat(
        self, stub: swarm_grpc.DispatcherStub, session_id: str, period: float, call: Any
    ) -> None:
        while not self._stop.wait(period) and call.running():
            try:
                reply = stub.Heartbeat(
                    swarm.HeartbeatRequest(session_id=session_id), timeout=max(period, 1.0)
                )
                period = reply.period or period
            except grpc.RpcError as exc:
                log.info("heartbeat failed: %s", describe(exc))
                call.cancel()
                return

    def _handle(self, message: swarm.SessionMessage, *, session_id: str = "") -> None:
        if message.HasField("networks"):
            self._networks(message.networks, session_id)
        managers = [peer.addr for peer in message.managers if peer.addr]
        if managers and managers != self.managers:
            self.managers = managers
            self.on_managers(managers)
        if message.HasField("node"):
            self.on_node(message.node)
        if message.HasField("assignments") and self.tasks is not None:
            self.tasks.apply(message.assignments)
        if message.HasField("log_subscription"):
            self._subscription(message.log_subscription)

    def _networks(self, views: swarm.NetworkViews, session_id: str) -> None:
        """A newer set within a session (a new session may start from any version)."""
        seen_session, seen_version = self._views_seen
        if session_id == seen_session and views.version < seen_version:
            return
        self._views_seen = (session_id, views.version)
        if self.on_networks is not None:
            try:
                self.on_networks(views)
            except Exception:  # the driver logs; the session must go on
                log.exception("applying the overlay network views failed")

    def attach_network(
        self, network: str, *, container_id: str, name: str, aliases: list[str]
    ) -> objects.NetworkAttachment:
        """An address for a standalone container on an attachable overlay (`run
        --network`), from the leader."""
        session = self._current
        if session is None:
            raise errors.Unavailable("this node has no session with a swarm manager")
        stub, session_id = session
        try:
            attachment: objects.NetworkAttachment = stub.AttachNetwork(
                swarm.AttachNetworkRequest(
                    session_id=session_id,
                    network=network,
                    container_id=container_id,
                    container_name=name,
                    aliases=aliases,
                ),
                timeout=15,
            )
        except grpc.RpcError as exc:
            raise _rpc_error(exc) from None
        return attachment

    def detach_network(self, container_id: str) -> None:
        session = self._current
        if session is None:
            return
        stub, session_id = session
        try:
            stub.DetachNetwork(
                swarm.DetachNetworkRequest(session_id=session_id, container_id=container_id),
                timeout=10,
            )
        except grpc.RpcError as exc:
            log.warning(
                "network attachment of %s not removed: %s", container_id[:12], describe(exc)
            )

    # ---- task status -----------------------------------------------------------------

    def report(self, updates: StatusUpdates) -> None:
        """The worker's status changes, to the leader; kept and sent again on failure."""
        with self._send_lock:
            for task_id, status in updates:
                self._unsent[task_id] = status
            self._send_unsent()

    def _resend_all(self) -> None:
        if self.tasks is not None:
            self.report(list(self.tasks.statuses().items()))

    def _send_unsent(self) -> None:
        session = self._current
        if session is None or not self._unsent:
            return
        stub, session_id = session
        updates = [
            swarm.TaskStatusUpdate(task_id=task_id, status=status)
            for task_id, status in self._unsent.items()
        ]
        try:
            stub.UpdateTaskStatus(
                swarm.UpdateTaskStatusRequest(session_id=session_id, updates=updates), timeout=10
            )
        except grpc.RpcError as exc:
            log.info("task status not sent (sent again later): %s", describe(exc))
            return
        self._unsent.clear()

    # ---- logs ------------------------------------------------------------------------

    def _subscription(self, sub: swarm.LogSubscription) -> None:
        if sub.cancel:
            stop = self._log_streams.pop(sub.id, None)
            if stop is not None:
                stop.set()
            return
        session = self._current
        if self.logs is None or session is None:
            return
        stop = threading.Event()
        self._log_streams[sub.id] = stop
        threading.Thread(
            target=self._publish_logs, args=(session[0], sub, stop), name="logs", daemon=True
        ).start()

    def _publish_logs(
        self, stub: swarm_grpc.DispatcherStub, sub: swarm.LogSubscription, stop: threading.Event
    ) -> None:
        assert self.logs is not None
        source = self.logs

        def messages() -> Iterator[swarm.LogMessage]:
            yield from source(sub, stop)
            yield swarm.LogMessage(subscription_id=sub.id, end=True)

        try:
            stub.PublishLogs(messages())
        except grpc.RpcError as exc:
            log.debug("log stream %s ended: %s", sub.id, describe(exc))
        finally:
            stop.set()
            self._log_streams.pop(sub.id, None)

    # ---- certificates --------------------------------------------------------------

    def _renewal_loop(self) -> None:
        while not self._stop.is_set():
            info = pki.cert_info(self.credentials.cert_pem)
            delay = pki.renewal_delay(info, now=datetime.now(UTC), rng=self.rng)
            if self._stop.wait(delay):
                return
            while not self._stop.is_set():
                try:
                    self.renew()
                    break
                except grpc.RpcError as exc:
                    log.warning("certificate renewal failed, retrying: %s", describe(exc))
                    self._stop.wait(1.0)

    def renew(self) -> objects.NodeRole.ValueType:
        key = pki.generate_key()
        last: grpc.RpcError | None = None
        for addr in self._candidates():
            try:
                reply = self._dispatcher(addr).RenewCertificate(
                    swarm.CertificateRequest(csr_pem=pki.make_csr(key)), timeout=10
                )
            except grpc.RpcError as exc:
                last = exc
                continue
            self.credentials.save(
                key_pem=pki.key_pem(key), cert_pem=reply.cert_pem, ca_pem=self.credentials.ca_pem
            )
            log.info("certificate renewed (role %s)", pki.cert_info(reply.cert_pem).role)
            return reply.role
        if last is not None:
            raise last
        raise RuntimeError("no manager to renew the certificate with")


def _rpc_error(exc: grpc.RpcError) -> errors.PyswarmError:
    """The manager's refusal as our error class, with its message."""
    if isinstance(exc, grpc.Call):
        for cls in (
            errors.NotFound,
            errors.InvalidArgument,
            errors.Conflict,
            errors.PermissionDenied,
            errors.Unavailable,
        ):
            if cls.status == exc.code():
                return cls(exc.details() or "")
    return errors.Unavailable(describe(exc))


def leader_hint(exc: grpc.RpcError) -> str | None:
    if isinstance(exc, grpc.Call):
        for key, value in exc.trailing_metadata() or ():
            if key == ports.LEADER_KEY:
                return value if isinstance(value, str) else value.decode()
    return None


def describe(exc: grpc.RpcError) -> str:
    if isinstance(exc, grpc.Call):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc)


def wait_connected(agent: SwarmAgent, *, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if agent.connected.wait(0.05):
            return True
    return False

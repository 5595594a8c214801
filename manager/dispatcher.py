"""The dispatcher: agents' sessions with the leader, their heartbeats, and node liveness.

Only the leader dispatches: a follower refuses sessions with the leader's address in
the `pyswarm-leader` trailing metadata, and the agent reconnects there. Each node
holds one session stream; the leader pushes on it the node's own object (so role and
availability changes reach the node), the list of managers and the heartbeat period.

Liveness: a heartbeat extends the session's deadline to 3 periods from now; a session
past its deadline ends and its node is marked DOWN. After a leader change the new
leader has no sessions yet: nodes the store shows as up become UNKNOWN and get a grace
window (3 periods + GRACE) to reconnect (READY again) before they are marked DOWN, so a
failover never takes nodes down or reschedules anything. Heartbeats themselves are
never written to the store: only transitions (READY, UNKNOWN, DOWN) are.
"""

from __future__ import annotations

import functools
import logging
import queue
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

from api import objects_pb2 as objects
from api import swarm_pb2 as swarm
from api import swarm_pb2_grpc as swarm_grpc
from api.errors import NotFound, SequenceConflict, Unavailable
from api.rpc import rpc
from manager import auth, networkcontrol
from manager import store as st
from manager.assignments import Changes, add_files, files_of, full_set
from manager.logbroker import LogBroker
from manager.taskstatus import StatusBatcher

if TYPE_CHECKING:
    from manager.manager import Manager

log = logging.getLogger(__name__)
DEFAULT_HEARTBEAT = 5.0
MISSED_HEARTBEATS = 3
GRACE = 2.0


@dataclass
class AgentSession:
    id: str
    node_id: str
    deadline: float
    outbox: queue.Queue[swarm.SessionMessage | None] = field(default_factory=queue.Queue)
    # The store version its full set of assignments was taken at; None until then
    # (increments wait for it, see manager.assignments).
    full_version: int | None = None
    files: set[str] = field(default_factory=set)  # secrets and configs it was sent


class Dispatcher(swarm_grpc.DispatcherServicer):
    def __init__(self, manager: Manager) -> None:
        self.manager = manager
        self._lock = threading.Lock()
        self._sessions: dict[str, AgentSession] = {}  # by node id
        self._leading = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._since = 0.0
        self.statuses = StatusBatcher(manager.store)
        self.logs = LogBroker(self.send)

    # ---- leadership ------------------------------------------------------------

    def start_leading(self) -> None:
        self._since = time.monotonic()
        self._stop.clear()
        self._leading.set()
        self._threads = [
            threading.Thread(target=self._expire_loop, name="dispatcher-expiry", daemon=True),
            threading.Thread(target=self._watch_loop, name="dispatcher-watch", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        self.statuses.start()
        self._mark_unknown()

    def _mark_unknown(self) -> None:
        """A new leader does not know who is alive yet: nodes without a session show as
        UNKNOWN (not DOWN) until they reconnect or their grace window ends."""

        def update(tx: st.Tx) -> None:
            # Not under `_lock` (held around store reads elsewhere: a lock-order
            # deadlock); copying the dict's keys is one atomic step.
            connected = set(self._sessions)
            for node in st.find_nodes(tx, by=st.All()):
                if node.status.state == objects.READY and node.meta.id not in connected:
                    node.status.state = objects.UNKNOWN
                    node.status.message = "leader changed: waiting for the node's session"
                    st.update_node(tx, node)

        try:  # a session marking its node READY meanwhile makes it stale: re-read
            self.manager.store.update_retrying(update)
        except (NotFound, Unavailable, SequenceConflict) as exc:
            log.debug("nodes not marked unknown: %s", exc)

    def stop_leading(self) -> None:
        self._leading.clear()
        self._stop.set()
        self.statuses.stop()
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            session.outbox.put(None)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)
        self._threads = []

    def session_count(self) -> int:
        with self._lock:
            return len(self._sessions)

    # ---- RPCs ------------------------------------------------------------------

    def _agent(self, context: grpc.ServicerContext, *, dispatching: bool = True) -> str:
        """The calling node's id (any role); with `dispatching`, only while this manager
        is the leader's dispatcher (otherwise the caller is sent to the leader)."""
        node_id = auth.caller(
            context, roles=(auth.MANAGER, auth.WORKER), exists=self.manager.node_exists
        ).node_id
        if dispatching and not self._leading.is_set():
            self.manager.refuse_not_leader(context)
        return node_id

    def period(self) -> float:
        try:
            return self.manager.cluster().spec.heartbeat_period or DEFAULT_HEARTBEAT
        except NotFound:
            return DEFAULT_HEARTBEAT

    @rpc
    def Session(
        self, request: swarm.SessionRequest, context: grpc.ServicerContext
    ) -> Iterator[swarm.SessionMessage]:
        node_id = self._agent(context)
        period = self.period()
        session = AgentSession(
            id=secrets.token_hex(8),
            node_id=node_id,
            deadline=time.monotonic() + MISSED_HEARTBEATS * period,
        )
        with self._lock:
            replaced = self._sessions.get(node_id)
            self._sessions[node_id] = session
        if replaced is not None:
            replaced.outbox.put(None)
        try:
            node = self._mark_ready(
                node_id, description=request.description, addr=request.addr or peer_host(context)
            )
            first = self._message(session, node)
            with self._lock:
                full = self._full_set(session)
            first.assignments.CopyFrom(full)
            first.networks.CopyFrom(self.manager.netviews.current(node_id))
            yield first
            while context.is_active() and self._leading.is_set():
                try:
                    message = session.outbox.get(timeout=1.0)
                except queue.Empty:
                    continue
                if message is None:
                    return
                yield message
        finally:
            with self._lock:
                lost = self._sessions.get(node_id) is session
                if lost:
                    del self._sessions[node_id]
                    # The stream broke without a clean end: heartbeats decide. Keep the
                    # deadline by leaving a tombstone session that expires on its own.
                    self._sessions[node_id] = AgentSession(
                        id="", node_id=node_id, deadline=session.deadline
                    )
            if lost:
                self.logs.node_lost(node_id)

    @rpc
    def Heartbeat(
        self, request: swarm.HeartbeatRequest, context: grpc.ServicerContext
    ) -> swarm.HeartbeatResponse:
        node_id = self._agent(context)
        period = self.period()
        with self._lock:
            session = self._session(node_id, request.session_id)
            session.deadline = time.monotonic() + MISSED_HEARTBEATS * period
        return swarm.HeartbeatResponse(period=period)

    def _session(self, node_id: str, session_id: str) -> AgentSession:
        """The node's live session with this id; the caller holds `_lock`."""
        session = self._sessions.get(node_id)
        if session is None or not session_id or session.id != session_id:
            raise NotFound("session invalid: start a new session")
        return session

    @rpc
    def UpdateTaskStatus(
        self, request: swarm.UpdateTaskStatusRequest, context: grpc.ServicerContext
    ) -> swarm.Empty:
        node_id = self._agent(context)
        with self._lock:
            self._session(node_id, request.session_id)
        self.statuses.report(node_id, [(u.task_id, u.status) for u in request.updates])
        return swarm.Empty()

    @rpc
    def PublishLogs(
        self, request_iterator: Iterator[swarm.LogMessage], context: grpc.ServicerContext
    ) -> swarm.Empty:
        node_id = self._agent(context)
        for message in request_iterator:
            if not self.logs.publish(node_id, message):
                break  # the reader went away: the agent stops when this call ends
        return swarm.Empty()

    @rpc
    def AttachNetwork(
        self, request: swarm.AttachNetworkRequest, context: grpc.ServicerContext
    ) -> objects.NetworkAttachment:
        """`run --network <attachable overlay>` on a node: an address for the container."""
        node_id = self._agent(context)
        with self._lock:
            self._session(node_id, request.session_id)
        return networkcontrol.attach(
            self.manager.networks,
            node_id=node_id,
            ref=request.network,
            container_id=request.container_id,
            name=request.container_name,
            aliases=list(request.aliases),
            deadline=self.manager.clock() + networkcontrol.ATTACH_TIMEOUT,
        )

    @rpc
    def DetachNetwork(
        self, request: swarm.DetachNetworkRequest, context: grpc.ServicerContext
    ) -> swarm.Empty:
        node_id = self._agent(context)
        with self._lock:
            self._session(node_id, request.session_id)
        networkcontrol.detach(
            self.manager.store, node_id=node_id, container_id=request.container_id
        )
        return swarm.Empty()

    def send(self, node_id: str, message: swarm.SessionMessage) -> bool:
        """Put a message on a node's session stream; False if it has no live session."""
        with self._lock:
            session = self._sessions.get(node_id)
            if session is None or not session.id:
                return False
            session.outbox.put(message)
            return True

    @rpc
    def RenewCertificate(
        self, request: swarm.CertificateRequest, context: grpc.ServicerContext
    ) -> swarm.CertificateResponse:
        node_id = self._agent(context, dispatching=False)  # any manager issues certificates
        node = self.manager.store.view(lambda tx: st.get_node(tx, node_id))
        assert node is not None  # _agent checked it exists
        role = auth.MANAGER if node.role == objects.MANAGER else auth.WORKER
        cert = self.manager.issue_certificate(
            request.csr_pem, node_id=node.meta.id, role=role, addr=node.status.addr
        )
        return swarm.CertificateResponse(cert_pem=cert, role=node.role)

    # ---- messages ----------------------------------------------------------------

    def _message(self, session: AgentSession, node: objects.Node) -> swarm.SessionMessage:
        managers = [
            swarm.Peer(node_id=n.meta.id, addr=n.manager_status.addr)
            for n in self.manager.store.view(lambda tx: st.find_nodes(tx, by=st.All()))
            if n.role == objects.MANAGER and n.manager_status.addr
        ]
        return swarm.SessionMessage(
            session_id=session.id,
            managers=managers,
            heartbeat_period=self.period(),
            node=node,
            root_ca_pem=self.manager.cluster().root_ca.ca_cert_pem,
        )

    def _node(self, node_id: str) -> objects.Node | None:
        return self.manager.store.view(lambda tx: st.get_node(tx, node_id))

    def _watch_loop(self) -> None:
        """Push a node what its agent acts on: its role and availability, its task
        assignments (manager.assignments), and a changed manager list to everyone.
        Other changes (labels, status) are not sent: at thousands of writes a second
        each would cost a message."""
        while not self._stop.is_set():
            watch = self.manager.store.watch(
                kinds={"node", "task"},
                maxsize=1_000_000,
                copies=False,  # read-only
            )
            try:
                self._resync()
                self._follow(watch)
            except st.WatchClosed:
                log.info("dispatcher fell behind the store: sending full sets again")
            finally:
                watch.close()

    def _follow(self, watch: st.Watch) -> None:
        changes = Changes()
        while not self._stop.is_set():
            event = watch.get(timeout=0.5)
            if isinstance(event, st.Reset):
                self._resync()
                changes = Changes()
            elif isinstance(event, st.Commit):
                self._flush(changes, event.version)
                changes = Changes()
            elif isinstance(event, st.Event) and event.kind == "task":
                changes.add(event)
            elif isinstance(event, st.Event):
                self._node_event(event)

    def _node_event(self, event: st.Event) -> None:
        node, old = event.obj, event.old
        assert isinstance(node, objects.Node)
        assert old is None or isinstance(old, objects.Node)
        if event.action == "remove":
            self._end_session(node.meta.id)
        if managers_changed(event.action, node, old):
            self._push(None)
        elif old is not None and agent_relevant(node) != agent_relevant(old):
            self._push(node.meta.id)

    def _full_set(self, session: AgentSession) -> swarm.AssignmentsMessage:
        """The session's full set, now; the caller holds `_lock` (so no increment for a
        later batch can be queued before it)."""

        def read(tx: st.ReadTx) -> tuple[swarm.AssignmentsMessage, set[str], int]:
            message, files = full_set(tx, session.node_id)
            return message, files, tx.version

        message, session.files, session.full_version = self.manager.store.view(read)
        return message

    def _resync(self) -> None:
        with self._lock:
            for session in self._sessions.values():
                if session.id and session.full_version is not None:
                    session.outbox.put(swarm.SessionMessage(assignments=self._full_set(session)))

    def _flush(self, changes: Changes, version: int) -> None:
        nodes = changes.nodes()
        if not nodes:
            return
        with self._lock:
            for node_id in nodes:
                session = self._sessions.get(node_id)
                if session is None or not session.id or session.full_version is None:
                    continue
                if session.full_version >= version:
                    continue  # its full set already holds this batch
                message = changes.message(node_id)
                needed = [f for t in message.tasks for f in files_of(t)]
                if any(f not in session.files for f in needed):
                    self.manager.store.view(
                        functools.partial(
                            add_files, message=message, ids=needed, sent=session.files
                        )
                    )
                session.outbox.put(swarm.SessionMessage(assignments=message))

    def _end_session(self, node_id: str) -> None:
        with self._lock:
            session = self._sessions.get(node_id)
        if session is not None and session.id:
            session.outbox.put(None)

    def _push(self, node_id: str | None) -> None:
        """A fresh session message to one node's session, or (None) to every session."""
        with self._lock:
            sessions = list(self._sessions.values())
        for session in sessions:
            if not session.id or (node_id is not None and session.node_id != node_id):
                continue
            own = self._node(session.node_id)
            if own is not None:
                session.outbox.put(self._message(session, own))

    # ---- liveness ------------------------------------------------------------------

    def _expire_loop(self) -> None:
        while not self._stop.wait(0.1):
            now = time.monotonic()
            with self._lock:
                expired = [s for s in self._sessions.values() if s.deadline < now]
                for session in expired:
                    del self._sessions[session.node_id]
            for session in expired:
                session.outbox.put(None)
                self._mark_down(session.node_id, "heartbeat failure")
            if now - self._since > MISSED_HEARTBEATS * self.period() + GRACE:
                self._down_without_session()

    def _down_without_session(self) -> None:
        nodes = self.manager.store.view(lambda tx: st.find_nodes(tx, by=st.All()))
        # A node that joined moments ago has its certificate but not yet its session:
        # it gets the same grace as every node after a leader change.
        joined_before = time.time() - (MISSED_HEARTBEATS * self.period() + GRACE)
        with self._lock:
            connected = set(self._sessions)
        for node in nodes:
            if node.status.state == objects.DOWN or node.meta.id in connected:
                continue
            if node.meta.created_at > joined_before:
                continue
            self._mark_down(node.meta.id, 'heartbeat failure for node in "unknown" state')

    def _live_session(self, node_id: str) -> bool:
        """Called inside store transactions: it must not take `_lock`, which is held
        around store reads elsewhere (a lock-order deadlock). One dict read is atomic."""
        session = self._sessions.get(node_id)
        return session is not None and bool(session.id)

    def _mark_down(self, node_id: str, message: str) -> None:
        if not self._leading.is_set():
            return

        def down(tx: st.Tx) -> None:
            node = st.get_node(tx, node_id)
            # Re-checked as the write is made (and again if it is retried after a
            # conflict): a session that came up meanwhile wins, or a node that has
            # just reconnected would be written DOWN by a decision taken before.
            if node is None or node.status.state == objects.DOWN or self._live_session(node_id):
                return
            node.status.state = objects.DOWN
            node.status.message = message
            st.update_node(tx, node)

        try:
            self.manager.store.update_retrying(down)
            log.info("node %s is down: %s", node_id, message)
        except (NotFound, Unavailable) as exc:
            log.debug("node %s not marked down: %s", node_id, exc)

    def _mark_ready(
        self, node_id: str, *, description: objects.NodeDescription, addr: str
    ) -> objects.Node:
        """A session started: the node is READY (DOWN is `_mark_down`'s own write)."""

        def update(tx: st.Tx) -> objects.Node:
            node = st.get_node(tx, node_id)
            if node is None:
                raise NotFound(f"node {node_id} not found")
            node.status.state = objects.READY
            node.status.message = ""
            if addr:
                node.status.addr = addr
            if description.hostname:
                node.description.CopyFrom(description)
            st.update_node(tx, node)
            return node

        return self.manager.store.update_retrying(update)


def managers_changed(action: str, node: objects.Node, old: objects.Node | None) -> bool:
    if node.role != objects.MANAGER and (old is None or old.role != objects.MANAGER):
        return False  # a worker came, went or changed: the manager list is the same
    return (
        action != "update"
        or old is None
        or old.role != node.role
        or old.manager_status.addr != node.manager_status.addr
    )


def agent_relevant(node: objects.Node) -> tuple[int, int, int]:
    """What a node's agent acts on: its role (certificate, manager) and availability."""
    return (node.role, node.spec.desired_role, node.spec.availability)


def peer_host(context: grpc.ServicerContext) -> str:
    """The caller's IP from grpc's peer string ("ipv4:198.18.0.11:53422")."""
    peer = context.peer()
    if peer.startswith("ipv4:"):
        return peer[5:].rpartition(":")[0]
    if peer.startswith("ipv6:"):
        return peer[5:].rpartition(":")[0].strip("[]")
    return ""

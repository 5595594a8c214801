"""One manager of the swarm: Raft, the replicated store, and the services on the cluster port.

Start-up order (`start`), each step needed by the next:
1. the Raft member, whose state machine is the store: the journal and snapshot on disk
   are replayed into the store before any call is served;
2. the cluster port (mTLS; Control, Dispatcher, RaftMembership) and the join port
   (TLS, server-authenticated; NodeCA) — listen port + 2, because grpc-python cannot
   ask for a client certificate without requiring one;
3. leadership: when this member becomes leader the dispatcher starts taking agent
   sessions and the role manager reconciles promotions and demotions; when it stops
   being leader both stop at once, so two leaders never both act.

Writes go through `store.update`, whose proposals reach Raft here: on the leader
directly; on a follower they are forwarded to the leader (RaftMembership.Propose) and
the call returns only once this manager's store has applied them, so a caller reads
its own writes. `read_barrier()` makes a read linearizable: the leader commits a no-op
first, a follower waits until it has applied what the leader had.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NoReturn, TypeVar

import grpc

from api import objects_pb2 as objects
from api import ports
from api import swarm_pb2 as swarm
from api import swarm_pb2_grpc as swarm_grpc
from api.errors import NotFound, PyswarmError, Unavailable
from api.rpc import time_left
from manager import store as st
from manager.ca import RootCA
from manager.keys import EncryptedMachine, KeyStore
from manager.metrics import PROPOSAL_SECONDS
from manager.peers import CredentialSource, PeerChannels
from manager.raft import (
    NoLeader,
    NotLeader,
    ProposalTimeout,
    RaftError,
    RaftNode,
    RaftStatus,
    Timing,
)
from manager.registry.cluster import ClusterRegistry

log = logging.getLogger(__name__)
_R = TypeVar("_R")

NO_LEADER = (
    "The swarm does not have a leader. It's possible that too few managers are online. "
    "Make sure more than half of the managers are online."
)
PROPOSE_TIMEOUT = 5.0
DEFAULT_SNAPSHOT_INTERVAL = 10_000  # docker's --snapshot-interval default


@dataclass(frozen=True)
class Endpoints:
    """Where a manager listens and how others reach it (Raft and the join endpoint at
    their offsets from the API port: api/ports.py)."""

    advertise_host: str
    listen_host: str = "0.0.0.0"
    api_port: int = ports.API_PORT

    @property
    def api_addr(self) -> str:
        return f"{self.advertise_host}:{self.api_port}"

    @property
    def raft_addr(self) -> str:
        return f"{self.advertise_host}:{ports.raft_port(self.api_port)}"

    @property
    def join_port(self) -> int:
        return ports.join_port(self.api_port)


def snapshot_interval() -> int:
    """Raft log entries between snapshots; PYSWARM_RAFT_SNAPSHOT_INTERVAL tunes it (tests
    set it low to make a lagging follower catch up from a snapshot)."""
    value = os.environ.get("PYSWARM_RAFT_SNAPSHOT_INTERVAL", "")
    return int(value) if value.isdigit() and int(value) > 0 else DEFAULT_SNAPSHOT_INTERVAL


class Manager:
    def __init__(
        self,
        node_id: str,
        *,
        state_dir: Path,
        endpoints: Endpoints,
        credentials: CredentialSource,
        keys: KeyStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from manager.control import ControlServicer
        from manager.dispatcher import Dispatcher
        from manager.membership import MembershipServicer
        from manager.netviews import NetViews
        from manager.networkcontrol import Networks
        from manager.nodeca import NodeCAServicer
        from manager.pipeline import Pipeline
        from manager.roles import RoleManager
        from manager.servicecontrol import Services

        self.node_id = node_id
        self.state_dir = state_dir
        self.endpoints = endpoints
        self.credentials = credentials
        self.keys = keys
        self._cipher = keys.cipher
        self.clock = clock
        self.store = st.MemoryStore(propose=self._propose, clock=clock)
        self.peers = PeerChannels(credentials)
        self.raft: RaftNode | None = None
        self.dispatcher = Dispatcher(self)
        self.roles = RoleManager(self)
        self.services = Services(self.store, clock=clock)
        self.networks = Networks(self.store, clock=clock)
        self.pipeline = Pipeline(self.store)
        self.netviews = NetViews(self.store, send=self.dispatcher.send)
        self.control = ControlServicer(self, authorize=True)
        self.local_control = ControlServicer(self, authorize=False)
        self._membership = MembershipServicer(self)
        self._nodeca = NodeCAServicer(self)
        self._servers: list[grpc.Server] = []
        self.registry = ClusterRegistry(
            state_dir.parent / "registry", host=endpoints.listen_host, credentials=credentials
        )
        self._leader_lock = threading.Lock()
        self._is_leader = False
        self._closed = False
        self._stopping = threading.Event()

    # ---- lifecycle -----------------------------------------------------------

    def start(
        self,
        *,
        peers: list[str],
        force_new_cluster: bool = False,
        join: bool = False,
    ) -> None:
        """Start Raft and serve. `join`: a new member, passive until the leader adds it."""
        raft_dir = self.state_dir / "raft"
        if force_new_cluster:
            RaftNode.reset_membership(raft_dir, self_addr=self.endpoints.raft_addr)
        self.raft = RaftNode(
            self_addr=self.endpoints.raft_addr,
            peers=[p for p in peers if p != self.endpoints.raft_addr],
            password=self.keys.password,
            data_dir=raft_dir,
            machine=EncryptedMachine(self.store, self.keys.cipher),
            on_leader_change=self._on_leader_change,
            timing=Timing(compaction_min_entries=snapshot_interval()),
            join=join,
        )
        self.raft.start()
        self._autolock = threading.Thread(
            target=self._follow_autolock, name="autolock", daemon=True
        )
        self._autolock.start()
        try:
            self._serve()
            self.registry.start()
        except BaseException:
            self.close()
            raise

    def _serve(self) -> None:
        cluster = grpc.server(
            # A session stream holds a thread for its node's life: room for 1,000+ nodes.
            futures.ThreadPoolExecutor(max_workers=2048, thread_name_prefix="cluster"),
            maximum_concurrent_rpcs=8192,
        )
        swarm_grpc.add_ControlServicer_to_server(self.control, cluster)
        swarm_grpc.add_DispatcherServicer_to_server(self.dispatcher, cluster)
        swarm_grpc.add_RaftMembershipServicer_to_server(self._membership, cluster)
        listen = self.endpoints.listen_host
        bound = cluster.add_secure_port(
            f"{listen}:{self.endpoints.api_port}", self._server_credentials(client_auth=True)
        )
        join = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="join"))
        swarm_grpc.add_NodeCAServicer_to_server(self._nodeca, join)
        bound_join = join.add_secure_port(
            f"{listen}:{self.endpoints.join_port}", self._server_credentials(client_auth=False)
        )
        if not bound or not bound_join:
            raise Unavailable(
                f"cannot listen on {listen}:{self.endpoints.api_port} and "
                f"{listen}:{self.endpoints.join_port} (address in use?)"
            )
        cluster.start()
        join.start()
        self._servers = [cluster, join]

    def _server_credentials(self, *, client_auth: bool) -> grpc.ServerCredentials:
        """Credentials that pick up a renewed certificate on the next handshake."""
        seen = [self.credentials.generation]

        def configuration() -> grpc.ServerCertificateConfiguration:
            key, cert, ca = self.credentials.triple()
            chain = cert + ca  # leaf + root: joiners find the root to check its digest
            return grpc.ssl_server_certificate_configuration([(key, chain)], ca)

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            if self.credentials.generation == seen[0]:
                return None
            seen[0] = self.credentials.generation
            return configuration()

        return grpc.dynamic_ssl_server_credentials(
            configuration(),
            fetch,  # type: ignore[arg-type]  # None means "unchanged" (grpc's docs)
            require_client_authentication=client_auth,
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        self._set_leader(False)
        for server in self._servers:
            server.stop(grace=0.5).wait()
        self.registry.close()
        if self.raft is not None:
            self.raft.close()
        self.peers.close()

    def _follow_autolock(self) -> None:
        """Keep keys.json wrapped as the cluster asks: with a KEK derived from the
        unlock key under autolock, else with a KEK kept beside it."""
        applied: bytes | None = None
        watch = self.store.watch(kinds={"cluster"})
        try:
            while not self._stopping.is_set():
                try:
                    cluster = self.cluster()
                except NotFound:
                    cluster = None
                if cluster is not None:
                    wanted = cluster.unlock_key if cluster.spec.autolock else b""
                    if wanted != applied:
                        self.keys.wrap(unlock_key=wanted.decode())
                        applied = wanted
                watch.get(timeout=0.5)
        finally:
            watch.close()

    # ---- leadership ------------------------------------------------------------

    def _on_leader_change(self, leader: str | None) -> None:
        # Called from Raft's thread: hand off, never block it.
        is_leader = leader == self.endpoints.raft_addr
        threading.Thread(
            target=self._set_leader, args=(is_leader,), name="leadership", daemon=True
        ).start()

    def _set_leader(self, is_leader: bool) -> None:
        with self._leader_lock:
            if self._closed and is_leader:
                return
            if self.raft is not None:
                # Re-check: leadership may have moved again while this thread started.
                is_leader = is_leader and self.raft.status().is_leader
            if is_leader == self._is_leader:
                return
            self._is_leader = is_leader
            log.info("this manager %s the leader", "is now" if is_leader else "is no longer")
            if is_leader:
                self.dispatcher.start_leading()
                self.roles.start()
                self.pipeline.start()
                self.netviews.start()
                self._ensure_ingress()
            else:
                self.netviews.stop()
                self.pipeline.stop()
                self.roles.stop()
                self.dispatcher.stop_leading()

    def _ensure_ingress(self) -> None:
        try:
            self.networks.ensure_ingress()
        except PyswarmError as exc:  # the next leader tries again
            log.warning("could not create the ingress network: %s", exc)

    @property
    def is_leader(self) -> bool:
        return self.raft is not None and self.raft.status().is_leader

    def wait_leader(self, *, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            assert self.raft is not None
            leader = self.raft.status().leader
            if leader is not None:
                return leader
            if time.monotonic() > deadline:
                raise Unavailable(NO_LEADER)
            time.sleep(0.02)

    def leader_api_addr(self) -> str | None:
        """The cluster API address of the current leader (derived from its Raft address:
        no store scan on the forwarding path of every follower write)."""
        assert self.raft is not None
        leader = self.raft.status().leader
        return None if leader is None else ports.api_addr_of_raft(leader)

    def refuse_not_leader(self, context: grpc.ServicerContext) -> NoReturn:
        """Refuse a call that only the leader may serve, naming the leader (LEADER_KEY
        trailing metadata) so the caller calls again there."""
        leader = self.leader_api_addr()
        if leader:
            context.set_trailing_metadata(((ports.LEADER_KEY, leader),))
        raise Unavailable(f"this manager is not the leader (the leader is {leader or 'unknown'})")

    def leader_stub(self) -> swarm_grpc.RaftMembershipStub:
        addr = self.leader_api_addr()
        if addr is None:
            raise Unavailable(NO_LEADER)
        return swarm_grpc.RaftMembershipStub(self.peers.get(addr))

    # ---- writes and reads --------------------------------------------------------

    def _propose(self, data: bytes) -> bytes:
        started = time.perf_counter()
        try:
            return self._propose_timed(data)
        finally:
            PROPOSAL_SECONDS.observe(time.perf_counter() - started)

    def _propose_timed(self, data: bytes) -> bytes:
        assert self.raft is not None, "the store is written only once Raft runs"
        data = self._cipher.seal(data)  # what Raft logs and ships is ciphertext
        try:
            return self.raft.propose(data, timeout=time_left(PROPOSE_TIMEOUT))
        except NotLeader as exc:
            if exc.leader is None:
                raise Unavailable(NO_LEADER) from None
        except (NoLeader, ProposalTimeout):
            raise Unavailable(NO_LEADER) from None
        except RaftError as exc:
            raise Unavailable(str(exc)) from None
        reply = self.forward(
            lambda stub: stub.Propose(
                swarm.ProposeRequest(batch=data), timeout=time_left(PROPOSE_TIMEOUT)
            )
        )
        result = objects.ApplyResult.FromString(reply.result)
        if not result.error_kind:
            self.wait_applied(result.version, timeout=time_left(PROPOSE_TIMEOUT))
        return reply.result

    def forward(self, call: Callable[[swarm_grpc.RaftMembershipStub], _R]) -> _R:
        """Run `call` against the leader's RaftMembership service; errors as ours."""
        try:
            return call(self.leader_stub())
        except grpc.RpcError as exc:
            raise remote_error(exc) from None

    def wait_applied(self, version: int, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.store.version < version:
            if time.monotonic() > deadline:
                raise Unavailable("this manager is not catching up with the leader")
            time.sleep(0.002)

    def read_barrier(self) -> None:
        """Make the next read reflect every write acknowledged before this call."""
        assert self.raft is not None
        if self.raft.status().is_leader:
            try:
                self.raft.barrier(timeout=time_left(PROPOSE_TIMEOUT))
            except RaftError:
                raise Unavailable(NO_LEADER) from None
            return
        reply = self.forward(
            lambda stub: stub.Barrier(swarm.Empty(), timeout=time_left(PROPOSE_TIMEOUT))
        )
        self.wait_applied(reply.version, timeout=time_left(PROPOSE_TIMEOUT))

    def cluster(self) -> objects.Cluster:
        clusters = self.store.view(lambda tx: st.find_clusters(tx, by=st.All()))
        if not clusters:
            raise NotFound("this swarm has no cluster object yet")
        return clusters[0]

    def node_exists(self, node_id: str) -> bool:
        return self.store.view(lambda tx: st.get_node(tx, node_id)) is not None

    def raft_status(self) -> RaftStatus:
        assert self.raft is not None
        return self.raft.status()

    def issue_certificate(
        self, csr_pem: bytes, *, node_id: str, role: str, addr: str = ""
    ) -> bytes:
        """A node certificate; a manager's also names its address (`addr`), which the
        cluster registry's clients verify."""
        cluster = self.cluster()
        ca = RootCA.load(cluster.root_ca.ca_cert_pem, cluster.root_ca.ca_key_pem)
        return ca.issue(
            csr_pem,
            node_id=node_id,
            role=role,
            expiry=timedelta(seconds=cluster.spec.node_cert_expiry or 90 * 86400),
            now=datetime.fromtimestamp(self.clock(), UTC),
            sans_ips=[addr] if addr and role == "manager" else [],
        )


def remote_error(exc: grpc.RpcError) -> PyswarmError:
    """A leader's gRPC status as our error, keeping its message and code."""
    from api import errors

    if not isinstance(exc, grpc.Call):
        return Unavailable(str(exc))
    details = exc.details() or ""
    code = exc.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(NO_LEADER)
    for cls in (
        errors.NotFound,
        errors.AlreadyExists,
        errors.InvalidArgument,
        errors.PermissionDenied,
        errors.Conflict,
    ):
        if cls.status == code:
            return cls(details)
    return errors.PyswarmError(details)

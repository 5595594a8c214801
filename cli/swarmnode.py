"""This host's place in a swarm: the Swarm API on the unix socket, and the agent and
manager it runs. Part of the daemon's wiring (like swarmkit's node/): the one place,
with cli/daemon.py, that imports both `manager` and `agent`.

State on disk, under <data-root>/swarm/: `state.json` (node id, addresses, the last
known managers and Raft members), `certificates/` (key, certificate, CA) and, on
managers, `manager/` (Raft journal and snapshot, cluster password). A daemon that
restarts with this state resumes: the manager rejoins Raft from its journal and the
agent reconnects. Leaving deletes it.

Role changes arrive on the agent's session as the node's own object: promoted, the
node renews its certificate (now a manager's), asks the leader to add it to Raft and
starts its manager; demoted (the leader has already taken it out of Raft), it stops
its manager, deletes the Raft data and renews its certificate as a worker.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import secrets
import shutil
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import grpc

from agent.engine import Engine
from agent.swarm.agent import SwarmAgent, leader_hint, wait_connected
from agent.swarm.join import join as join_swarm
from agent.swarm.join import split_addr
from agent.swarm.worker import Worker
from api import objects_pb2 as objects
from api import pki, ports
from api import swarm_pb2 as swarm
from api import swarm_pb2_grpc as swarm_grpc
from api.credentials import NodeCredentials, write_atomic
from api.errors import Conflict, InvalidArgument, PyswarmError, Unavailable
from api.rpc import rpc
from cli import swarmtasks
from cli.hostfacts import default_advertise_host, node_description
from manager import store as st
from manager.ca import RootCA
from manager.control import ControlServicer
from manager.ids import new_id
from manager.keys import KeyStore, Locked
from manager.manager import Endpoints, Manager, remote_error
from manager.raft import RaftError
from manager.registry.cluster import PORT as REGISTRY_PORT
from overlay.swarmnet import SwarmNetworks

log = logging.getLogger(__name__)
LEAVE_TASKS_TIMEOUT = 30.0  # seconds for `swarm leave` to stop the node's tasks
T = TypeVar("T")

NOT_IN_SWARM = (
    'This node is not a swarm manager. Use "pyswarm swarm init" or "pyswarm swarm join" '
    "to connect this node to swarm and try again."
)
WORKER_ONLY = (
    "This node is not a swarm manager. Worker nodes can't be used to view or modify "
    "cluster state. Please run this command on a manager node or promote the current "
    "node to a manager."
)
ALREADY = (
    'This node is already part of a swarm. Use "pyswarm swarm leave" to leave this swarm '
    "and join another one."
)
DEFAULT_CERT_EXPIRY = 90 * 86400.0
READY_TIMEOUT = 20.0


class Addresses(NamedTuple):
    """Where this node listens and what it advertises, from init's or join's flags."""

    listen_host: str
    advertise_host: str
    api_port: int

    @classmethod
    def of(cls, listen_addr: str, advertise_addr: str) -> Addresses:
        listen_host, listen_port = split_addr(listen_addr or f"0.0.0.0:{ports.API_PORT}")
        advertise = advertise_addr or default_advertise_host()
        host, port = split_addr(advertise, default_port=listen_port)
        pki.validate_ip(host)
        return cls(listen_host, host, port)

    @property
    def api_addr(self) -> str:
        return f"{self.advertise_host}:{self.api_port}"

    def state(self, node_id: str, *, managers: list[str]) -> dict[str, Any]:
        """The state.json of a node that has just joined (or started) a swarm."""
        return {
            "node_id": node_id,
            "advertise_host": self.advertise_host,
            "listen_host": self.listen_host,
            "api_port": self.api_port,
            "managers": managers,
            "raft_peers": [],
        }


class SwarmNode(swarm_grpc.SwarmServicer):
    def __init__(
        self,
        data_root: Path,
        *,
        hostname: str,
        registry_cas: dict[str, bytes] | None = None,
        engine: Engine | None = None,
        networks: SwarmNetworks | None = None,
    ) -> None:
        self.dir = data_root / "swarm"
        self.engine = engine  # runs this node's tasks (None: a control-plane-only node)
        self.networks = networks  # the engine's network driver: overlays, DNS, mesh
        self.worker: Worker | None = None
        self.hostname = hostname
        # The engine's per-registry CAs: the managers' registries are trusted with the
        # cluster CA for as long as this node is in the swarm.
        self.registry_cas = registry_cas if registry_cas is not None else {}
        self.credentials = NodeCredentials(self.dir / "certificates")
        self.manager: Manager | None = None
        self.agent: SwarmAgent | None = None
        self.state: dict[str, Any] = {}
        self.locked = False  # a manager under autolock, restarted, not yet unlocked
        self._lock = threading.RLock()
        self._role_lock = threading.Lock()
        if (self.dir / "state.json").exists() and self.credentials.exists():
            self.state = json.loads((self.dir / "state.json").read_text())

    # ---- persistence -------------------------------------------------------------

    def _save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self.dir / "state.json", json.dumps(self.state).encode(), mode=0o600)

    def _endpoints(self) -> Endpoints:
        return Endpoints(
            advertise_host=self.state["advertise_host"],
            listen_host=self.state["listen_host"],
            api_port=self.state["api_port"],
        )

    # ---- lifecycle ---------------------------------------------------------------

    def resume(self) -> None:
        """Rejoin the swarm this daemon was part of before it restarted."""
        if not self.state:
            return
        with self._lock:
            manager_dir = self.dir / "manager"
            if self.credentials.role == "manager" and KeyStore.exists(manager_dir):
                if KeyStore.is_locked(manager_dir):
                    self.locked = True
                    log.warning("this manager is locked: run `pyswarm swarm unlock`")
                    return
                self._start_manager(KeyStore.load(manager_dir))
            self._start_agent()
        log.info("resumed swarm membership as node %s", self.state["node_id"])

    def close(self) -> None:
        with self._lock:
            if self.agent is not None:
                self.agent.stop()
                self.agent = None
            if self.worker is not None:
                self.worker.stop()  # containers keep running (live restore)
                self.worker = None
            if self.manager is not None:
                self.manager.close()
                self.manager = None

    def _start_manager(self, keys: KeyStore, *, force: bool = False, join: bool = False) -> Manager:
        manager = Manager(
            self.state["node_id"],
            state_dir=self.dir / "manager",
            endpoints=self._endpoints(),
            credentials=self.credentials,
            keys=keys,
        )
        if self.engine is not None:
            manager.services.image_resolver = functools.partial(
                swarmtasks.pin_image,
                self.engine,
                registry=f"{self.state['advertise_host']}:{REGISTRY_PORT}",
            )
        manager.start(peers=self.state.get("raft_peers", []), force_new_cluster=force, join=join)
        self.manager = manager
        return manager

    def _start_agent(self) -> None:
        self._trust_registries()
        agent = SwarmAgent(
            self.credentials,
            managers=self.state.get("managers", []),
            addr=self.state["advertise_host"],
            description=node_description(self.hostname),
            on_node=self._on_node,
            on_managers=self._on_managers,
            logs=None
            if self.engine is None
            else swarmtasks.log_source(self.engine, self.state["node_id"]),
        )
        if self.engine is not None:
            self.worker = swarmtasks.start_worker(
                self.engine, agent, node_id=self.state["node_id"], hostname=self.hostname
            )
        if self.networks is not None:
            self.networks.join(
                node_id=self.state["node_id"],
                local_addr=self.state["advertise_host"],
                attacher=functools.partial(agent.attach_network, aliases=[]),
                detacher=agent.detach_network,
            )
            agent.on_networks = self.networks.update_views
        agent.start()
        self.agent = agent

    def _on_managers(self, managers: list[str]) -> None:
        with self._lock:
            if self.state:
                self.state["managers"] = managers
                self._save()
                self._trust_registries()

    def _trust_registries(self) -> None:
        self.registry_cas.clear()
        if not self.state or not self.credentials.exists():
            return
        for addr in self.state.get("managers", []):
            host = addr.rpartition(":")[0]
            self.registry_cas[f"{host}:{REGISTRY_PORT}"] = self.credentials.ca_pem

    # ---- role changes ----------------------------------------------------------------

    def _on_node(self, node: objects.Node) -> None:
        is_manager = self.manager is not None
        wants_manager = node.role == objects.MANAGER
        if is_manager != wants_manager or self.credentials.role != (
            "manager" if wants_manager else "worker"
        ):
            threading.Thread(
                target=self._change_role, args=(wants_manager,), name="role", daemon=True
            ).start()

    def _change_role(self, wants_manager: bool) -> None:
        with self._role_lock:
            agent = self.agent
            if agent is None:
                return
            try:
                if wants_manager and self.manager is None:
                    agent.renew()
                    self._become_manager(agent)
                elif not wants_manager and self.manager is not None:
                    with self._lock:
                        manager, self.manager = self.manager, None
                    manager.close()
                    shutil.rmtree(self.dir / "manager", ignore_errors=True)
                    agent.renew()
                    log.info("this node is now a worker")
                elif self.credentials.role != ("manager" if wants_manager else "worker"):
                    agent.renew()
            except (grpc.RpcError, PyswarmError) as exc:
                log.warning("role change not done yet: %s", exc)

    def _become_manager(self, agent: SwarmAgent) -> None:
        """Join Raft and start the manager; callers hold `_role_lock`, so a join as
        manager and the session's role message never both start one."""
        if self.manager is not None:
            return
        endpoints = self._endpoints()
        reply = self._call_managers(
            [m for m in [agent.leader] if m] + agent.managers,
            lambda stub: stub.JoinRaft(
                swarm.JoinRaftRequest(raft_addr=endpoints.raft_addr, api_addr=endpoints.api_addr),
                timeout=30.0,
            ),
        )
        with self._lock:
            self.state["raft_peers"] = list(reply.members)
            self._save()
            keys = KeyStore.create(
                self.dir / "manager", password=reply.password, data_key=reply.data_key
            )
            self._start_manager(keys, join=True)
        log.info("this node is now a manager")

    def _call_managers(
        self, managers: list[str], call: Callable[[swarm_grpc.RaftMembershipStub], T]
    ) -> T:
        """`call` on the leader: each manager in turn, following a refusal's leader hint."""
        key, cert, ca = self.credentials.triple()
        last: PyswarmError = Unavailable("no manager to call")
        queue, tried = list(managers), set[str]()
        while queue and len(tried) < 8:
            addr = queue.pop(0)
            tried.add(addr)
            with pki.cluster_channel(addr, ca, cert_pem=cert, key_pem=key) as channel:
                try:
                    return call(swarm_grpc.RaftMembershipStub(channel))
                except grpc.RpcError as exc:
                    last = remote_error(exc)
                    hint = leader_hint(exc)
                    if hint and hint not in tried:
                        queue.insert(0, hint)
        raise last

    # ---- Swarm API -------------------------------------------------------------------

    @rpc
    def Init(self, request: swarm.InitRequest, context: grpc.ServicerContext) -> swarm.InitResponse:
        with self._lock:
            if request.force_new_cluster and self.state and self.credentials.role == "manager":
                return self._force_new_cluster()
            if self.state:
                raise Conflict(ALREADY)
            addrs = Addresses.of(request.listen_addr, request.advertise_addr)
            node_id = new_id()
            now = datetime.now(UTC)
            expiry = request.cert_expiry or DEFAULT_CERT_EXPIRY
            if expiry < 3600:
                raise InvalidArgument("minimum certificate expiry time is 1h0m0s")
            ca = RootCA.create(now=now)
            key = pki.generate_key()
            cert = ca.issue(
                pki.make_csr(key),
                node_id=node_id,
                role="manager",
                expiry=timedelta(seconds=expiry),
                now=now,
                sans_ips=[addrs.advertise_host],
            )
            self.state = addrs.state(node_id, managers=[addrs.api_addr])
            try:
                self.credentials.save(key_pem=pki.key_pem(key), cert_pem=cert, ca_pem=ca.cert_pem)
                keys = KeyStore.create(
                    self.dir / "manager",
                    password=secrets.token_hex(32),
                    data_key=KeyStore.new_data_key(),
                )
                manager = self._start_manager(keys)
                manager.wait_leader(timeout=READY_TIMEOUT)
                manager.store.update(lambda tx: self._create_cluster(tx, request, ca, node_id))
                self._save()
                self._start_agent()
            except BaseException:
                self._forget()
                raise
            assert self.agent is not None
            wait_connected(self.agent, timeout=READY_TIMEOUT)
            unlock = manager.cluster().unlock_key.decode()
            return swarm.InitResponse(node_id=node_id, unlock_key=unlock)

    def _create_cluster(
        self, tx: st.Tx, request: swarm.InitRequest, ca: RootCA, node_id: str
    ) -> None:
        from manager.control import new_unlock_key

        endpoints = self._endpoints()
        spec = objects.ClusterSpec(
            name="default",
            task_history_limit=request.task_history_limit or 5,
            heartbeat_period=request.dispatcher_heartbeat or 5.0,
            node_cert_expiry=request.cert_expiry or DEFAULT_CERT_EXPIRY,
            autolock=request.autolock,
            default_addr_pool=list(request.default_addr_pool) or ["10.0.0.0/8"],
            subnet_size=request.default_addr_pool_mask_length or 24,
        )
        tokens = objects.JoinTokens(
            worker=pki.format_token(ca.digest, pki.new_secret()),
            manager=pki.format_token(ca.digest, pki.new_secret()),
        )
        st.create_cluster(
            tx,
            objects.Cluster(
                meta=objects.Meta(id=new_id()),
                spec=spec,
                root_ca=objects.RootCA(
                    ca_cert_pem=ca.cert_pem,
                    ca_key_pem=ca.key_pem,
                    digest=ca.digest,
                    join_tokens=tokens,
                ),
                unlock_key=new_unlock_key() if request.autolock else b"",
            ),
        )
        st.create_node(
            tx,
            objects.Node(
                meta=objects.Meta(id=node_id),
                spec=objects.NodeSpec(
                    desired_role=objects.MANAGER, availability=request.availability
                ),
                description=node_description(self.hostname),
                status=objects.NodeStatus(state=objects.READY, addr=endpoints.advertise_host),
                manager_status=objects.ManagerStatus(
                    raft_addr=endpoints.raft_addr,
                    addr=endpoints.api_addr,
                    reachability=objects.REACHABLE,
                ),
                role=objects.MANAGER,
            ),
        )

    def _force_new_cluster(self) -> swarm.InitResponse:
        """Keep all state and make this manager the only member of a new Raft group."""
        self.close()
        self.state["raft_peers"] = []
        manager = self._start_manager(KeyStore.load(self.dir / "manager"), force=True)
        manager.wait_leader(timeout=READY_TIMEOUT)
        endpoints = self._endpoints()

        def demote_others(tx: st.Tx) -> None:
            for node in st.find_nodes(tx, by=st.All()):
                if node.meta.id == self.state["node_id"] or node.role != objects.MANAGER:
                    continue
                # The others are no longer Raft members: they stay listed, as workers.
                node.role = objects.WORKER
                node.spec.desired_role = objects.WORKER
                node.ClearField("manager_status")
                st.update_node(tx, node)

        manager.store.update_retrying(demote_others)
        self.state["raft_peers"] = []
        self.state["managers"] = [endpoints.api_addr]
        self._save()
        self._start_agent()
        return swarm.InitResponse(node_id=self.state["node_id"])

    @rpc
    def Join(self, request: swarm.JoinRequest, context: grpc.ServicerContext) -> swarm.JoinResponse:
        # _role_lock before _lock, the order _change_role takes them in.
        with self._role_lock, self._lock:
            if self.state:
                raise Conflict(ALREADY)
            pki.parse_token(request.token)
            addrs = Addresses.of(request.listen_addr, request.advertise_addr)
            try:
                reply = join_swarm(
                    request.token,
                    remote=request.remote_addr,
                    advertise_addr=addrs.advertise_host,
                    availability=request.availability,
                    description=node_description(self.hostname),
                    credentials=self.credentials,
                )
                managers = [p.addr for p in reply.managers] or [request.remote_addr]
                self.state = addrs.state(reply.node_id, managers=managers)
                self._save()
                self._start_agent()
                assert self.agent is not None
                if reply.role == objects.MANAGER:
                    self._become_manager(self.agent)
                wait_connected(self.agent, timeout=READY_TIMEOUT)
            except BaseException:
                self._forget()
                raise
            return swarm.JoinResponse(node_id=reply.node_id, role=reply.role)

    def _forget(self) -> None:
        """Drop every trace of swarm membership on this host (a failed init or join,
        or leave): its task containers too."""
        if self.worker is not None:
            swarmtasks.remove_all_tasks(self.worker, timeout=LEAVE_TASKS_TIMEOUT)
        self.close()
        if self.networks is not None:
            self.networks.leave()  # the routing mesh and any overlay left over
        self.state = {}
        self.registry_cas.clear()
        shutil.rmtree(self.dir, ignore_errors=True)
        self.credentials = NodeCredentials(self.dir / "certificates")

    @rpc
    def Leave(self, request: swarm.LeaveRequest, context: grpc.ServicerContext) -> swarm.Empty:
        with self._lock:
            if not self.state:
                raise Conflict("This node is not part of a swarm")
            if self.locked and not request.force:
                raise Locked()
            manager = self.manager
            if manager is not None:
                members = manager.raft_status().members
                if not request.force:
                    raise Conflict(leave_refusal(len(members)))
                if len(members) > 1:
                    try:
                        if manager.is_leader:
                            assert manager.raft is not None
                            manager.raft.transfer_leadership(timeout=10.0)
                        self._call_managers(
                            self.state.get("managers", []),
                            lambda stub: stub.LeaveRaft(swarm.Empty(), timeout=30.0),
                        )
                    except (PyswarmError, RaftError) as exc:
                        log.warning("leaving Raft failed, leaving anyway: %s", exc)
            self._forget()
        return swarm.Empty()

    @rpc
    def Unlock(self, request: swarm.UnlockRequest, context: grpc.ServicerContext) -> swarm.Empty:
        with self._lock:
            if not self.locked:
                raise Conflict("Error: swarm is not locked")
            keys = KeyStore.unlock(self.dir / "manager", request.key)
            self._start_manager(keys)
            self._start_agent()
            self.locked = False
        log.info("swarm unlocked")
        return swarm.Empty()

    @rpc
    def Info(self, request: swarm.Empty, context: grpc.ServicerContext) -> swarm.SwarmInfo:
        with self._lock:
            if not self.state:
                return swarm.SwarmInfo(local_node_state="inactive")
            info = swarm.SwarmInfo(
                local_node_state="locked" if self.locked else "active",
                node_id=self.state["node_id"],
                node_addr=self.state["advertise_host"],
                control_available=self.manager is not None,
                remote_managers=self.state.get("managers", []),
            )
            manager = self.manager
        if manager is not None:
            try:
                nodes = manager.store.view(lambda tx: st.find_nodes(tx, by=st.All()))
                info.nodes = len(nodes)
                info.managers = sum(1 for n in nodes if n.role == objects.MANAGER)
                info.cluster_id = manager.cluster().meta.id
                snapshot = manager.store.snapshot()
                info.store_version = manager.store.version
                info.store_digest = hashlib.sha256(snapshot).hexdigest()
            except PyswarmError as exc:
                info.error = exc.message
        return info

    # ---- the control API through the unix socket ------------------------------------

    def local_control(self) -> ControlServicer:
        if self.manager is not None:
            return self.manager.local_control
        if self.locked:
            raise Locked()
        raise Conflict(WORKER_ONLY if self.state else NOT_IN_SWARM)


def leave_refusal(managers: int) -> str:
    if managers <= 1:
        return (
            "You are attempting to leave the swarm on a node that is participating as a "
            "manager. Removing the last manager erases all current state of the swarm. "
            "Use `--force` to ignore this message."
        )
    return (
        "You are attempting to leave the swarm on a node that is participating as a "
        f"manager. Removing this node leaves {managers - 1} managers out of {managers}. "
        "Without a Raft quorum your swarm will be inaccessible. The only way to restore a "
        "swarm that has lost consensus is to reinitialize it with `--force-new-cluster`. "
        "Use `--force` to suppress this message."
    )

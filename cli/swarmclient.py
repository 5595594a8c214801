"""The client side of swarm mode: the daemon's `Swarm` service (init, join, leave,
unlock, the local view) and the managers' `Control` service (nodes, the cluster), over
the same unix-socket channel and with the same failure mapping as `cli.client`.

grpc and the generated `api.swarm_pb2*` modules are imported inside functions only
(start-up time). Calls raise `CliError`s, never `grpc.RpcError`: `CannotConnect` for a
missing daemon, `DaemonError` ("Error response from daemon: <details>") for a status;
a node the daemon cannot find is `NoSuchNode` ("Error: No such node: <ref>", docker's
words). A daemon that is no manager answers Control calls with FAILED_PRECONDITION
("This node is not a swarm manager. ..."), shown as it comes.

    with swarmclient.connect(host) as client:
        for node in client.list_nodes(): ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Self, TypeVar

from cli.client import DaemonClient, DaemonError, open_channel
from cli.main import current_host

if TYPE_CHECKING:
    import grpc

    from api import objects_pb2 as opb
    from api import swarm_pb2 as spb
    from api.swarm_pb2_grpc import ControlStub, SwarmStub

Req = TypeVar("Req")
Resp = TypeVar("Resp")

SELF = "self"  # docker's name for the local node in node commands
DEFAULT_PORT = 2377
# The objects.proto enums' names, indexed by value, as docker spells them in JSON.
ROLES = ("worker", "manager")
AVAILABILITIES = ("active", "pause", "drain")
STATES = ("unknown", "down", "ready", "disconnected")
REACHABILITIES = ("unknown", "unreachable", "reachable")


class NoSuchNode(DaemonError):
    """A node reference the managers do not know: docker's `Error: No such node: x`."""

    def __init__(self, ref: str) -> None:
        super().__init__(ref, status="NOT_FOUND", hinted_exit_code=None)
        self.message = f"Error: No such node: {ref}"
        self.args = (self.message,)


def connect(host: str) -> SwarmClient:
    """The Swarm and Control APIs of the daemon at `host`."""
    return SwarmClient.open(host)


def current() -> SwarmClient:
    """A connection to the daemon chosen by `-H`/`$PYSWARM_HOST`."""
    return SwarmClient.open(current_host())


class SwarmClient(DaemonClient):
    """The Swarm and Control APIs of one daemon, one method per RPC."""

    @classmethod
    def open(cls, host: str) -> Self:
        """A client of this class over a new channel to the daemon at `host`."""
        from api.swarm_pb2_grpc import ControlStub, SwarmStub

        channel = open_channel(host)
        return cls(host, channel, SwarmStub(channel), ControlStub(channel))

    def __init__(
        self, host: str, channel: grpc.Channel, swarm: SwarmStub, control: ControlStub
    ) -> None:
        super().__init__(host, channel)
        self._swarm = swarm
        self._control = control

    # ---- Swarm (local) ----

    def init(
        self,
        *,
        advertise_addr: str = "",
        listen_addr: str = "",
        default_addr_pool: list[str] | None = None,
        default_addr_pool_mask_length: int = 0,
        dispatcher_heartbeat: float = 0.0,
        cert_expiry: float = 0.0,
        task_history_limit: int = 0,
        autolock: bool = False,
        force_new_cluster: bool = False,
        availability: int = 0,
    ) -> spb.InitResponse:
        from api import swarm_pb2 as spb

        request = spb.InitRequest(
            advertise_addr=advertise_addr,
            listen_addr=listen_addr,
            default_addr_pool=default_addr_pool or [],
            default_addr_pool_mask_length=default_addr_pool_mask_length,
            dispatcher_heartbeat=dispatcher_heartbeat,
            cert_expiry=cert_expiry,
            task_history_limit=task_history_limit,
            autolock=autolock,
            force_new_cluster=force_new_cluster,
            availability=availability,  # type: ignore[arg-type]  # an Availability value
        )
        return self._call(self._swarm.Init, request)

    def join(
        self,
        remote_addr: str,
        *,
        token: str,
        advertise_addr: str = "",
        listen_addr: str = "",
        availability: int = 0,
    ) -> spb.JoinResponse:
        from api import swarm_pb2 as spb

        request = spb.JoinRequest(
            token=token,
            remote_addr=remote_addr,
            advertise_addr=advertise_addr,
            listen_addr=listen_addr,
            availability=availability,  # type: ignore[arg-type]  # an Availability value
        )
        return self._call(self._swarm.Join, request)

    def leave(self, *, force: bool) -> None:
        from api import swarm_pb2 as spb

        self._call(self._swarm.Leave, spb.LeaveRequest(force=force))

    def unlock(self, key: str) -> None:
        from api import swarm_pb2 as spb

        self._call(self._swarm.Unlock, spb.UnlockRequest(key=key))

    def info(self) -> spb.SwarmInfo:
        from api import swarm_pb2 as spb

        return self._call(self._swarm.Info, spb.Empty())

    # ---- Control (managers) ----

    def list_nodes(self) -> list[opb.Node]:
        from api import swarm_pb2 as spb

        return list(self._call(self._control.ListNodes, spb.Empty()).nodes)

    def get_node(self, ref: str) -> opb.Node:
        """The node `ref` names (id, id prefix or hostname; `self` is the local node)."""
        from api import swarm_pb2 as spb

        node_ref = (self.info().node_id or ref) if ref == SELF else ref
        try:
            return self._call(self._control.GetNode, spb.NodeRef(node=node_ref))
        except DaemonError as e:
            if e.status == "NOT_FOUND":
                raise NoSuchNode(ref) from None
            raise

    def update_node(self, node_id: str, *, version: int, spec: opb.NodeSpec) -> opb.Node:
        from api import swarm_pb2 as spb

        request = spb.UpdateNodeRequest(node_id=node_id, version=version, spec=spec)
        return self._call(self._control.UpdateNode, request)

    def remove_node(self, node_id: str, *, force: bool) -> None:
        from api import swarm_pb2 as spb

        request = spb.RemoveNodeRequest(node_id=node_id, force=force)
        self._call(self._control.RemoveNode, request)

    def get_cluster(self) -> opb.Cluster:
        from api import swarm_pb2 as spb

        return self._call(self._control.GetCluster, spb.Empty())

    def update_cluster(
        self,
        *,
        version: int,
        spec: opb.ClusterSpec,
        rotate_worker_token: bool = False,
        rotate_manager_token: bool = False,
        rotate_unlock_key: bool = False,
    ) -> opb.Cluster:
        from api import swarm_pb2 as spb

        request = spb.UpdateClusterRequest(
            version=version,
            spec=spec,
            rotate_worker_token=rotate_worker_token,
            rotate_manager_token=rotate_manager_token,
            rotate_unlock_key=rotate_unlock_key,
        )
        return self._call(self._control.UpdateCluster, request)

    def get_unlock_key(self) -> str:
        from api import swarm_pb2 as spb

        return self._call(self._control.GetUnlockKey, spb.Empty()).key

    # ---- composites ----

    def manager_addr(self, node_id: str) -> str:
        """The cluster address to join through `node_id`: its ManagerStatus.addr (as
        docker's join command shows), else this daemon's node address on port 2377."""
        node = self.get_node(node_id)
        if node.HasField("manager_status") and node.manager_status.addr:
            return node.manager_status.addr
        return with_port(self.info().node_addr, DEFAULT_PORT)


def with_port(addr: str, port: int) -> str:
    """`HOST` -> `HOST:port`; `HOST:PORT` and `[v6]:PORT` unchanged."""
    if addr.startswith("["):
        return addr if "]:" in addr else f"{addr}:{port}"
    if addr.count(":") == 1:
        return addr
    if ":" in addr:  # a bare IPv6 address
        return f"[{addr}]:{port}"
    return f"{addr}:{port}"


def parse_availability(value: str) -> int:
    """`active`, `pause` or `drain` (any case) -> the Availability value."""
    if value.lower() not in AVAILABILITIES:
        raise ValueError(
            f'invalid availability "{value}", only active, pause and drain are supported'
        )
    return AVAILABILITIES.index(value.lower())

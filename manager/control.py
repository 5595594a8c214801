"""The control API: what `pyswarm node ...` and `swarm join-token/update` call.

Served twice by a manager: on the cluster port, where only manager certificates may
call it (`authorize=True`), and through the daemon's unix socket (root on this host).
Reads go through `read_barrier` first, so a follower never answers with state older
than a write the caller already saw acknowledged. Writes carry the version the caller
read; a stale one fails with "update out of sequence" (the store refuses it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import grpc

from api import objects_pb2 as objects
from api import pki
from api import swarm_pb2 as swarm
from api import swarm_pb2_grpc as swarm_grpc
from api.errors import Conflict, InvalidArgument, NotFound
from api.rpc import rpc
from manager import auth
from manager import store as st
from manager.quorum import check_demotion
from manager.servicelogs import service_logs

if TYPE_CHECKING:
    from manager.manager import Manager


def decorate(node: objects.Node, manager: Manager) -> objects.Node:
    """Fill in what only Raft knows now: who leads and which managers answer."""
    if node.role != objects.MANAGER or not node.manager_status.raft_addr:
        return node
    status = manager.raft_status()
    addr = node.manager_status.raft_addr
    node.manager_status.leader = addr == status.leader
    reachable = addr == status.self_addr or status.reachable.get(addr, False)
    node.manager_status.reachability = objects.REACHABLE if reachable else objects.UNREACHABLE
    return node


def redacted(cluster: objects.Cluster) -> objects.Cluster:
    cluster.root_ca.ca_key_pem = b""
    cluster.unlock_key = b""
    return cluster


class ControlServicer(swarm_grpc.ControlServicer):
    def __init__(self, manager: Manager, *, authorize: bool) -> None:
        self.manager = manager
        self.authorize = authorize

    def _check(self, context: grpc.ServicerContext) -> None:
        if self.authorize:
            auth.caller(context, roles=(auth.MANAGER,), exists=self.manager.node_exists)

    @rpc
    def ListNodes(self, request: swarm.Empty, context: grpc.ServicerContext) -> swarm.NodeList:
        self._check(context)
        self.manager.read_barrier()
        nodes = self.manager.store.view(lambda tx: st.find_nodes(tx, by=st.All()))
        return swarm.NodeList(nodes=[decorate(n, self.manager) for n in nodes])

    @rpc
    def GetNode(self, request: swarm.NodeRef, context: grpc.ServicerContext) -> objects.Node:
        self._check(context)
        self.manager.read_barrier()
        node = self.manager.store.view(lambda tx: st.resolve_node(tx, request.node))
        return decorate(node, self.manager)

    @rpc
    def UpdateNode(
        self, request: swarm.UpdateNodeRequest, context: grpc.ServicerContext
    ) -> objects.Node:
        self._check(context)
        spec = request.spec
        if spec.availability not in objects.Availability.values():
            raise InvalidArgument("invalid availability")

        def update(tx: st.Tx) -> objects.Node:
            node = st.get_node(tx, request.node_id)
            if node is None:
                raise NotFound(f"node {request.node_id} not found")
            if node.meta.version != request.version:
                raise Conflict("update out of sequence")
            if spec.desired_role == objects.WORKER and node.spec.desired_role == objects.MANAGER:
                check_demotion(tx, node, self.manager.raft_status())
            node.spec.CopyFrom(spec)
            st.update_node(tx, node)
            return node

        self.manager.store.update(update)
        node = self.manager.store.view(lambda tx: st.get_node(tx, request.node_id))
        assert node is not None
        return decorate(node, self.manager)

    @rpc
    def RemoveNode(
        self, request: swarm.RemoveNodeRequest, context: grpc.ServicerContext
    ) -> swarm.Empty:
        self._check(context)

        def remove(tx: st.Tx) -> None:
            node = st.resolve_node(tx, request.node_id)
            name = request.node_id
            if node.role == objects.MANAGER or node.spec.desired_role == objects.MANAGER:
                raise Conflict(
                    f"node {name} is a cluster manager and is a member of the raft "
                    "cluster. It must be demoted to worker before removal"
                )
            if node.status.state == objects.READY and not request.force:
                raise Conflict(
                    f"node {name} is not down and can't be removed "
                    "(use --force to remove it anyway)"
                )
            st.delete_node(tx, node.meta.id)

        self.manager.store.update(remove)
        return swarm.Empty()

    @rpc
    def GetCluster(self, request: swarm.Empty, context: grpc.ServicerContext) -> objects.Cluster:
        self._check(context)
        self.manager.read_barrier()
        return redacted(self.manager.cluster())

    @rpc
    def UpdateCluster(
        self, request: swarm.UpdateClusterRequest, context: grpc.ServicerContext
    ) -> objects.Cluster:
        self._check(context)
        spec = request.spec
        if spec.heartbeat_period and spec.heartbeat_period < 0.1:
            raise InvalidArgument("dispatcher heartbeat period must be at least 100ms")
        if spec.node_cert_expiry and spec.node_cert_expiry < 3600:
            raise InvalidArgument("minimum certificate expiry time is 1h0m0s")

        def update(tx: st.Tx) -> None:
            clusters = st.find_clusters(tx, by=st.All())
            if not clusters:
                raise NotFound("this swarm has no cluster object")
            cluster = clusters[0]
            if cluster.meta.version != request.version:
                raise Conflict("update out of sequence")
            cluster.spec.CopyFrom(spec)
            tokens = cluster.root_ca.join_tokens
            if request.rotate_worker_token:
                tokens.worker = pki.format_token(cluster.root_ca.digest, pki.new_secret())
            if request.rotate_manager_token:
                tokens.manager = pki.format_token(cluster.root_ca.digest, pki.new_secret())
            if request.rotate_unlock_key or (spec.autolock and not cluster.unlock_key):
                cluster.unlock_key = new_unlock_key()
            if not spec.autolock:
                cluster.unlock_key = b""
            st.update_cluster(tx, cluster)

        self.manager.store.update(update)
        return redacted(self.manager.cluster())

    @rpc
    def GetUnlockKey(self, request: swarm.Empty, context: grpc.ServicerContext) -> swarm.UnlockKey:
        self._check(context)
        self.manager.read_barrier()
        return swarm.UnlockKey(key=self.manager.cluster().unlock_key.decode())

    # ---- services, tasks, secrets, configs (manager.servicecontrol) ------------------

    @rpc
    def CreateService(
        self, request: swarm.CreateServiceRequest, context: grpc.ServicerContext
    ) -> objects.Service:
        self._check(context)
        return self.manager.services.create_service(request.spec)

    @rpc
    def GetService(
        self, request: swarm.ServiceRef, context: grpc.ServicerContext
    ) -> objects.Service:
        self._check(context)
        self.manager.read_barrier()
        return self.manager.services.get_service(request.service)

    @rpc
    def ListServices(
        self, request: swarm.Empty, context: grpc.ServicerContext
    ) -> swarm.ServiceList:
        self._check(context)
        self.manager.read_barrier()
        return swarm.ServiceList(services=self.manager.services.list_services())

    @rpc
    def UpdateService(
        self, request: swarm.UpdateServiceRequest, context: grpc.ServicerContext
    ) -> objects.Service:
        self._check(context)
        return self.manager.services.update_service(request)

    @rpc
    def RemoveService(
        self, request: swarm.ServiceRef, context: grpc.ServicerContext
    ) -> swarm.Empty:
        self._check(context)
        self.manager.services.remove_service(request.service)
        return swarm.Empty()

    @rpc
    def ListTasks(
        self, request: swarm.ListTasksRequest, context: grpc.ServicerContext
    ) -> swarm.TaskList:
        self._check(context)
        self.manager.read_barrier()
        return swarm.TaskList(tasks=self.manager.services.list_tasks(request))

    @rpc
    def GetTask(self, request: swarm.TaskRef, context: grpc.ServicerContext) -> objects.Task:
        self._check(context)
        self.manager.read_barrier()
        return self.manager.services.get_task(request.task)

    @rpc
    def ServiceLogs(
        self, request: swarm.ServiceLogsRequest, context: grpc.ServicerContext
    ) -> Iterator[swarm.LogMessage]:
        self._check(context)
        yield from service_logs(self.manager, request, context)

    @rpc
    def CreateSecret(
        self, request: objects.SecretSpec, context: grpc.ServicerContext
    ) -> objects.Secret:
        self._check(context)
        return self.manager.services.create_secret(request)

    @rpc
    def GetSecret(self, request: swarm.ObjectRef, context: grpc.ServicerContext) -> objects.Secret:
        self._check(context)
        self.manager.read_barrier()
        return self.manager.services.get_secret(request.ref)

    @rpc
    def ListSecrets(self, request: swarm.Empty, context: grpc.ServicerContext) -> swarm.SecretList:
        self._check(context)
        self.manager.read_barrier()
        return swarm.SecretList(secrets=self.manager.services.list_secrets())

    @rpc
    def RemoveSecret(self, request: swarm.ObjectRef, context: grpc.ServicerContext) -> swarm.Empty:
        self._check(context)
        self.manager.services.remove_secret(request.ref)
        return swarm.Empty()

    @rpc
    def CreateConfig(
        self, request: objects.SecretSpec, context: grpc.ServicerContext
    ) -> objects.Config:
        self._check(context)
        return self.manager.services.create_config(request)

    @rpc
    def GetConfig(self, request: swarm.ObjectRef, context: grpc.ServicerContext) -> objects.Config:
        self._check(context)
        self.manager.read_barrier()
        return self.manager.services.get_config(request.ref)

    @rpc
    def ListConfigs(self, request: swarm.Empty, context: grpc.ServicerContext) -> swarm.ConfigList:
        self._check(context)
        self.manager.read_barrier()
        return swarm.ConfigList(configs=self.manager.services.list_configs())

    @rpc
    def RemoveConfig(self, request: swarm.ObjectRef, context: grpc.ServicerContext) -> swarm.Empty:
        self._check(context)
        self.manager.services.remove_config(request.ref)
        return swarm.Empty()

    @rpc
    def CreateNetwork(
        self, request: objects.NetworkSpec, context: grpc.ServicerContext
    ) -> objects.Network:
        self._check(context)
        return self.manager.networks.create_network(request)

    @rpc
    def GetNetwork(
        self, request: swarm.ObjectRef, context: grpc.ServicerContext
    ) -> objects.Network:
        self._check(context)
        self.manager.read_barrier()
        return self.manager.networks.get_network(request.ref)

    @rpc
    def ListNetworks(
        self, request: swarm.Empty, context: grpc.ServicerContext
    ) -> swarm.NetworkList:
        self._check(context)
        self.manager.read_barrier()
        return swarm.NetworkList(networks=self.manager.networks.list_networks())

    @rpc
    def RemoveNetwork(self, request: swarm.ObjectRef, context: grpc.ServicerContext) -> swarm.Empty:
        self._check(context)
        self.manager.networks.remove_network(request.ref)
        return swarm.Empty()

    @rpc
    def PruneNetworks(
        self, request: swarm.Empty, context: grpc.ServicerContext
    ) -> swarm.PruneNetworksResponse:
        self._check(context)
        return swarm.PruneNetworksResponse(deleted=self.manager.networks.prune_networks())


def new_unlock_key() -> bytes:
    import base64
    import secrets

    return b"SWMKEY-1-" + base64.b32encode(secrets.token_bytes(20)).rstrip(b"=")

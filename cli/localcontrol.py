"""The Control service on the daemon's unix socket: this host's manager, or a refusal
that says why not (not in a swarm, a worker, or a locked manager)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import grpc

from api import objects_pb2 as objects
from api import swarm_pb2 as swarm
from api import swarm_pb2_grpc as swarm_grpc
from api.rpc import rpc
from manager.control import ControlServicer

if TYPE_CHECKING:
    from cli.swarmnode import SwarmNode


class LocalControl(swarm_grpc.ControlServicer):
    """The Control service on the unix socket: this host's manager, or a clear refusal."""

    def __init__(self, node: SwarmNode) -> None:
        self.node = node

    def _target(self) -> ControlServicer:
        return self.node.local_control()

    @rpc
    def ListNodes(self, request: swarm.Empty, context: grpc.ServicerContext) -> swarm.NodeList:
        return self._target().ListNodes(request, context)

    @rpc
    def GetNode(self, request: swarm.NodeRef, context: grpc.ServicerContext) -> objects.Node:
        return self._target().GetNode(request, context)

    @rpc
    def UpdateNode(
        self, request: swarm.UpdateNodeRequest, context: grpc.ServicerContext
    ) -> objects.Node:
        return self._target().UpdateNode(request, context)

    @rpc
    def RemoveNode(
        self, request: swarm.RemoveNodeRequest, context: grpc.ServicerContext
    ) -> swarm.Empty:
        return self._target().RemoveNode(request, context)

    @rpc
    def GetCluster(self, request: swarm.Empty, context: grpc.ServicerContext) -> objects.Cluster:
        return self._target().GetCluster(request, context)

    @rpc
    def UpdateCluster(
        self, request: swarm.UpdateClusterRequest, context: grpc.ServicerContext
    ) -> objects.Cluster:
        return self._target().UpdateCluster(request, context)

    @rpc
    def GetUnlockKey(self, request: swarm.Empty, context: grpc.ServicerContext) -> swarm.UnlockKey:
        return self._target().GetUnlockKey(request, context)

    @rpc
    def CreateService(
        self, request: swarm.CreateServiceRequest, context: grpc.ServicerContext
    ) -> objects.Service:
        return self._target().CreateService(request, context)

    @rpc
    def GetService(
        self, request: swarm.ServiceRef, context: grpc.ServicerContext
    ) -> objects.Service:
        return self._target().GetService(request, context)

    @rpc
    def ListServices(
        self, request: swarm.Empty, context: grpc.ServicerContext
    ) -> swarm.ServiceList:
        return self._target().ListServices(request, context)

    @rpc
    def UpdateService(
        self, request: swarm.UpdateServiceRequest, context: grpc.ServicerContext
    ) -> objects.Service:
        return self._target().UpdateService(request, context)

    @rpc
    def RemoveService(
        self, request: swarm.ServiceRef, context: grpc.ServicerContext
    ) -> swarm.Empty:
        return self._target().RemoveService(request, context)

    @rpc
    def ListTasks(
        self, request: swarm.ListTasksRequest, context: grpc.ServicerContext
    ) -> swarm.TaskList:
        return self._target().ListTasks(request, context)

    @rpc
    def GetTask(self, request: swarm.TaskRef, context: grpc.ServicerContext) -> objects.Task:
        return self._target().GetTask(request, context)

    @rpc
    def CreateSecret(
        self, request: objects.SecretSpec, context: grpc.ServicerContext
    ) -> objects.Secret:
        return self._target().CreateSecret(request, context)

    @rpc
    def GetSecret(self, request: swarm.ObjectRef, context: grpc.ServicerContext) -> objects.Secret:
        return self._target().GetSecret(request, context)

    @rpc
    def ListSecrets(self, request: swarm.Empty, context: grpc.ServicerContext) -> swarm.SecretList:
        return self._target().ListSecrets(request, context)

    @rpc
    def RemoveSecret(self, request: swarm.ObjectRef, context: grpc.ServicerContext) -> swarm.Empty:
        return self._target().RemoveSecret(request, context)

    @rpc
    def CreateConfig(
        self, request: objects.SecretSpec, context: grpc.ServicerContext
    ) -> objects.Config:
        return self._target().CreateConfig(request, context)

    @rpc
    def GetConfig(self, request: swarm.ObjectRef, context: grpc.ServicerContext) -> objects.Config:
        return self._target().GetConfig(request, context)

    @rpc
    def ListConfigs(self, request: swarm.Empty, context: grpc.ServicerContext) -> swarm.ConfigList:
        return self._target().ListConfigs(request, context)

    @rpc
    def RemoveConfig(self, request: swarm.ObjectRef, context: grpc.ServicerContext) -> swarm.Empty:
        return self._target().RemoveConfig(request, context)

    @rpc
    def CreateNetwork(
        self, request: objects.NetworkSpec, context: grpc.ServicerContext
    ) -> objects.Network:
        return self._target().CreateNetwork(request, context)

    @rpc
    def GetNetwork(
        self, request: swarm.ObjectRef, context: grpc.ServicerContext
    ) -> objects.Network:
        return self._target().GetNetwork(request, context)

    @rpc
    def ListNetworks(
        self, request: swarm.Empty, context: grpc.ServicerContext
    ) -> swarm.NetworkList:
        return self._target().ListNetworks(request, context)

    @rpc
    def RemoveNetwork(self, request: swarm.ObjectRef, context: grpc.ServicerContext) -> swarm.Empty:
        return self._target().RemoveNetwork(request, context)

    @rpc
    def PruneNetworks(
        self, request: swarm.Empty, context: grpc.ServicerContext
    ) -> swarm.PruneNetworksResponse:
        return self._target().PruneNetworks(request, context)

    @rpc
    def ServiceLogs(
        self, request: swarm.ServiceLogsRequest, context: grpc.ServicerContext
    ) -> Iterator[swarm.LogMessage]:
        yield from self._target().ServiceLogs(request, context)

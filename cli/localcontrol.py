"""The Control service on the daemon's unix socket: this host's manager, or a refusal
that says why not (not in a swarm, a worker, or a locked manager)."""

from __future__ import annotations

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

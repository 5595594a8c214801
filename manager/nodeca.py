"""NodeCA: the join endpoint. A node without a certificate sends its join token and a CSR.

Served on the join port (TLS with the manager's certificate, no client certificate).
The token must equal the cluster's current worker or manager token, compared in
constant time; a rotated token stops working at once. Only then is a node id chosen,
the certificate issued (CN = node id, OU = the token's role) and the node object
created — a refused join leaves nothing behind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from api import objects_pb2 as objects
from api import pki
from api import swarm_pb2 as swarm
from api import swarm_pb2_grpc as swarm_grpc
from api.errors import InvalidArgument, PermissionDenied
from api.rpc import rpc
from manager import store as st
from manager.ids import new_id

if TYPE_CHECKING:
    from manager.manager import Manager

INVALID_TOKEN = "A valid join token is necessary to join this cluster"


class NodeCAServicer(swarm_grpc.NodeCAServicer):
    def __init__(self, manager: Manager) -> None:
        self.manager = manager

    @rpc
    def IssueNodeCertificate(
        self, request: swarm.IssueRequest, context: grpc.ServicerContext
    ) -> swarm.IssueResponse:
        pki.parse_token(request.token)  # the format first: "invalid join token: ..."
        cluster = self.manager.cluster()
        tokens = cluster.root_ca.join_tokens
        if pki.tokens_equal(request.token, tokens.manager):
            role = objects.MANAGER
        elif pki.tokens_equal(request.token, tokens.worker):
            role = objects.WORKER
        else:
            raise PermissionDenied(INVALID_TOKEN)
        if request.availability not in objects.Availability.values():
            raise InvalidArgument("invalid availability")
        node_id = new_id()
        role_name = "manager" if role == objects.MANAGER else "worker"
        cert = self.manager.issue_certificate(
            request.csr_pem, node_id=node_id, role=role_name, addr=request.advertise_addr
        )
        node = objects.Node(
            meta=objects.Meta(id=node_id),
            spec=objects.NodeSpec(desired_role=role, availability=request.availability),
            description=request.description,
            status=objects.NodeStatus(state=objects.UNKNOWN, addr=request.advertise_addr),
            role=role,
            cert_not_after=pki.cert_info(cert).not_after.timestamp(),
        )
        self.manager.store.update(lambda tx: st.create_node(tx, node))
        managers = [
            swarm.Peer(node_id=n.meta.id, addr=n.manager_status.addr)
            for n in self.manager.store.view(lambda tx: st.find_nodes(tx, by=st.All()))
            if n.role == objects.MANAGER and n.manager_status.addr
        ]
        return swarm.IssueResponse(
            node_id=node_id,
            cert_pem=cert,
            ca_cert_pem=cluster.root_ca.ca_cert_pem,
            role=role,
            managers=managers,
        )

"""Who may call what on the cluster port.

Every RPC on the cluster port arrives over mutual TLS, so the caller is the node named
by its certificate: CN = node id, OU = role. Workers may only use the dispatcher;
the control API and Raft membership are for managers. A certificate is not enough on
its own: the node must still exist in the store (`node rm` takes a node out at once,
even though its certificate stays valid until it expires).
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from api import pki
from api.errors import PermissionDenied

MANAGER = "manager"
WORKER = "worker"


def caller(
    context: grpc.ServicerContext,
    *,
    roles: tuple[str, ...],
    exists: Callable[[str], bool],
) -> pki.Identity:
    identity = pki.peer_identity(context)
    if identity is None:
        raise PermissionDenied("a node certificate is required")
    if identity.role not in roles:
        raise PermissionDenied(
            f"permission denied: a {identity.role} certificate may not call this "
            f"(needs {' or '.join(roles)})"
        )
    if not exists(identity.node_id):
        raise PermissionDenied(f"node {identity.node_id} is not a member of this swarm")
    return identity

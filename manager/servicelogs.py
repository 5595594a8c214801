"""`service logs`: which nodes to ask, and forwarding to the leader.

Only the leader holds the agents' sessions, so a follower forwards the call to the
leader's Control service (over its mTLS peer channel) and relays the stream.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING

import grpc

from api import objects_pb2 as objects
from api import swarm_pb2 as swarm
from api import swarm_pb2_grpc as swarm_grpc
from api.errors import NotFound, Unavailable
from manager import store as st

if TYPE_CHECKING:
    from manager.manager import Manager


def resolve_tasks(tx: st.ReadTx, refs: list[str]) -> list[objects.Task]:
    """The tasks `refs` name: each a service (id, name, prefix) or else a task."""
    found: dict[str, objects.Task] = {}
    for ref in refs:
        try:
            service = st.resolve_service(tx, ref)
        except NotFound:
            task = st.resolve_task(tx, ref)
            found[task.meta.id] = task
            continue
        found.update((t.meta.id, t) for t in st.find_tasks(tx, by=st.ByService(service.meta.id)))
    return [t for t in found.values() if t.node_id and t.status.state >= objects.TASK_STARTING]


def service_logs(
    manager: Manager, request: swarm.ServiceLogsRequest, context: grpc.ServicerContext
) -> Iterator[swarm.LogMessage]:
    if not manager.is_leader:
        yield from _forward(manager, request, context)
        return

    def read(tx: st.ReadTx) -> tuple[dict[str, list[str]], dict[str, str]]:
        by_node: dict[str, list[str]] = defaultdict(list)
        for task in resolve_tasks(tx, list(request.refs)):
            by_node[task.node_id].append(task.meta.id)
        names = {}
        for node_id in by_node:
            node = st.get_node(tx, node_id)
            names[node_id] = node.description.hostname if node is not None else node_id
        return dict(by_node), names

    by_node, names = manager.store.view(read)
    broker = manager.dispatcher.logs
    sub = broker.subscribe(
        by_node, follow=request.follow, tail=request.tail, since=request.since, node_names=names
    )
    yield from broker.read(sub, active=context.is_active)


def _forward(
    manager: Manager, request: swarm.ServiceLogsRequest, context: grpc.ServicerContext
) -> Iterator[swarm.LogMessage]:
    addr = manager.leader_api_addr()
    if addr is None:
        raise Unavailable("the swarm does not have a leader")
    call = swarm_grpc.ControlStub(manager.peers.get(addr)).ServiceLogs(request)

    def cancel() -> None:
        call.cancel()  # the reader went away: end the leader's stream too

    context.add_callback(cancel)
    try:
        yield from call
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.CANCELLED:
            from manager.manager import remote_error

            raise remote_error(exc) from None

"""RaftMembership: manager-to-manager calls on the cluster port (manager certificates only).

- Propose: a follower's store batch, proposed by the leader; the reply carries the
  ApplyResult so the follower can wait until it has applied the same version.
- Barrier: the leader commits a no-op and answers with its store version (reads
  that must be current wait for that version locally).
- JoinRaft: a node the store already lists as a manager (joined with the manager
  token, or promoted) asks to become a Raft member; the leader adds it and answers
  with the members and the cluster password, which never travels but over mTLS.
- LeaveRaft: the caller is taken out of the Raft group (`swarm leave --force`).
Calls reaching a follower are refused with the leader's address (`pyswarm-leader`
trailing metadata): they act on the caller's own node, and a forwarded call would
reach the leader as the forwarding manager's.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import grpc

from api import objects_pb2 as objects
from api import swarm_pb2 as swarm
from api import swarm_pb2_grpc as swarm_grpc
from api.errors import PermissionDenied, PyswarmError, Unavailable
from api.rpc import rpc, time_left
from manager import auth
from manager import store as st
from manager.raft import RaftError

if TYPE_CHECKING:
    from manager.manager import Manager

log = logging.getLogger(__name__)
MEMBERSHIP_TIMEOUT = 20.0


class MembershipServicer(swarm_grpc.RaftMembershipServicer):
    def __init__(self, manager: Manager) -> None:
        self.manager = manager

    def _caller(self, context: grpc.ServicerContext) -> str:
        """The calling manager's node id, on the leader (followers send it there)."""
        node_id = auth.caller(
            context, roles=(auth.MANAGER,), exists=self.manager.node_exists
        ).node_id
        if not self.manager.is_leader:
            self.manager.refuse_not_leader(context)
        return node_id

    @rpc
    def Propose(
        self, request: swarm.ProposeRequest, context: grpc.ServicerContext
    ) -> swarm.ProposeResponse:
        self._caller(context)
        raft = self.manager.raft
        assert raft is not None
        try:
            result = raft.propose(request.batch, timeout=time_left(5.0))
        except RaftError as exc:
            raise Unavailable(str(exc)) from None
        return swarm.ProposeResponse(result=result)

    @rpc
    def Barrier(self, request: swarm.Empty, context: grpc.ServicerContext) -> swarm.BarrierResponse:
        self._caller(context)
        self.manager.read_barrier()
        return swarm.BarrierResponse(version=self.manager.store.version)

    @rpc
    def JoinRaft(
        self, request: swarm.JoinRaftRequest, context: grpc.ServicerContext
    ) -> swarm.JoinRaftResponse:
        node_id = self._caller(context)
        raft = self.manager.raft
        assert raft is not None
        node = self.manager.store.view(lambda tx: st.get_node(tx, node_id))
        if node is None or node.role != objects.MANAGER:
            raise PermissionDenied("only a node with the manager role may join Raft")
        # The new member starts (passive) when it has this answer, and only then can the
        # change commit — growing from one member to two needs the new one's vote. So
        # the leader adds it in the background and records it once committed.
        threading.Thread(
            target=self._add, args=(node_id, request), name="raft-add", daemon=True
        ).start()
        status = raft.status()
        return swarm.JoinRaftResponse(
            members=sorted({*status.members, request.raft_addr}),
            password=self.manager.keys.password,
            leader=status.leader or "",
            data_key=self.manager.keys.data_key,
        )

    def _add(self, node_id: str, request: swarm.JoinRaftRequest) -> None:
        raft = self.manager.raft
        assert raft is not None
        log.info("adding %s (node %s) to Raft", request.raft_addr, node_id)
        try:
            raft.add_member(request.raft_addr, timeout=MEMBERSHIP_TIMEOUT)
        except RaftError as exc:
            log.warning("cannot add %s to Raft: %s", request.raft_addr, exc)
            return

        def record(tx: st.Tx) -> None:
            current = st.get_node(tx, node_id)
            if current is None:
                return
            current.manager_status.raft_addr = request.raft_addr
            current.manager_status.addr = request.api_addr
            st.update_node(tx, current)

        try:
            self.manager.store.update_retrying(record)
            log.info("%s (node %s) is a Raft member", request.raft_addr, node_id)
        except PyswarmError as exc:
            log.warning("Raft member %s not recorded: %s", request.raft_addr, exc.message)

    @rpc
    def LeaveRaft(self, request: swarm.Empty, context: grpc.ServicerContext) -> swarm.Empty:
        node_id = self._caller(context)
        node = self.manager.store.view(lambda tx: st.get_node(tx, node_id))
        if node is not None and node.manager_status.raft_addr == self.manager.endpoints.raft_addr:
            raise Unavailable("the leader cannot remove itself: transfer leadership first")
        self.manager.roles.remove_from_raft(node_id)

        def demote(tx: st.Tx) -> None:
            # No longer a Raft member: listed as a (down) worker, so quorum arithmetic
            # does not count it and `node rm` can take it out.
            current = st.get_node(tx, node_id)
            if current is None:
                return
            current.role = current.spec.desired_role = objects.WORKER
            current.ClearField("manager_status")
            st.update_node(tx, current)

        self.manager.store.update_retrying(demote)
        return swarm.Empty()

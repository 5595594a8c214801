"""Quorum arithmetic for role changes: refuse what would leave Raft without a majority.

A Raft group of n members needs floor(n/2)+1 of them to elect a leader and commit.
Demoting (or removing) a manager shrinks the group to n-1; the change is safe only if
the managers that stay and are reachable now still form a majority of n-1.
"""

from __future__ import annotations

from api import objects_pb2 as objects
from api.errors import Conflict
from manager import store as st
from manager.raft import RaftStatus


def majority(members: int) -> int:
    return members // 2 + 1


def check_demotion(tx: st.ReadTx, node: objects.Node, status: RaftStatus) -> None:
    managers = [n for n in st.find_nodes(tx, by=st.All()) if n.role == objects.MANAGER]
    remaining = [n for n in managers if n.meta.id != node.meta.id]
    if not remaining:
        raise Conflict("attempting to demote the last manager of the swarm")
    reachable = sum(
        1
        for n in remaining
        if n.manager_status.raft_addr == status.self_addr
        or status.reachable.get(n.manager_status.raft_addr, False)
    )
    if reachable < majority(len(remaining)):
        raise Conflict(
            f"can't demote {node.description.hostname or node.meta.id}: it would lose quorum "
            f"({reachable} of the {len(remaining)} remaining managers are reachable, "
            f"{majority(len(remaining))} needed)"
        )

"""The swarm's ports: the operator chooses one, the cluster API (2377); Raft and the join
endpoint sit at fixed offsets from it on the same host, so a node that knows HOST:2377
(from `swarm join`, or a manager list) can reach all three.
"""

from __future__ import annotations

API_PORT = 2377
RAFT_OFFSET = 1  # pysyncobj's peer port
JOIN_OFFSET = 2  # TLS without a client certificate: nodes that have none yet
# Trailing metadata naming the leader's cluster API when a follower refuses a call.
LEADER_KEY = "pyswarm-leader"


def raft_port(api_port: int) -> int:
    return api_port + RAFT_OFFSET


def join_port(api_port: int) -> int:
    return api_port + JOIN_OFFSET


def api_addr_of_raft(raft_addr: str) -> str:
    """The cluster API HOST:PORT of the manager whose Raft endpoint is `raft_addr`."""
    host, _, port = raft_addr.rpartition(":")
    return f"{host}:{int(port) - RAFT_OFFSET}"

"""Simulated nodes for scale tests: many real agent sessions in one process.

Each simulated node joins the swarm with a real token and certificate, keeps a real
session with the leader's dispatcher (heartbeats, assignments, status reports, over
mTLS), and runs its tasks on the SimulatedExecutor: no containers, so a 2-core
machine can stand in for 1,000 nodes (after hashicorp-forge/nomad-nodesim). All the
nodes' task workers share one Runner (a few threads), so the per-node cost is its
session's threads and channel.

    with NodeSim(manager="127.0.0.1:2377", token=token, nodes=100, root=tmp) as sim:
        sim.start(); sim.wait_ready(timeout=60)
"""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from api import objects_pb2 as objects
from api import swarm_pb2 as swarm
from api.credentials import NodeCredentials
from api.errors import Unavailable

from .agent import SwarmAgent
from .join import join
from .simulated import SimulatedExecutor
from .worker import Runner, Worker

log = logging.getLogger(__name__)
SIM_CPUS = 4 * 10**9
SIM_MEMORY = 8 << 30
JOIN_ATTEMPTS = 8


@dataclass
class SimNode:
    hostname: str
    node_id: str
    agent: SwarmAgent
    worker: Worker


class NodeSim:
    def __init__(
        self,
        *,
        manager: str,
        token: str,
        nodes: int,
        root: Path,
        prefix: str = "sim",
        delays: tuple[float, float] = (0.005, 0.05),
        seed: int = 1,
        join_parallelism: int = 8,
    ) -> None:
        self.manager = manager
        self.token = token
        self.count = nodes
        self.root = root
        self.prefix = prefix
        self.join_parallelism = join_parallelism
        self.rng = random.Random(seed)
        self.executor_delays = delays
        self.runner = Runner(threads=8)
        self.nodes: list[SimNode] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        """Join every node (in parallel) and start its session."""
        with ThreadPoolExecutor(self.join_parallelism, thread_name_prefix="sim-join") as pool:
            for node in pool.map(self._start_one, range(1, self.count + 1)):
                self.nodes.append(node)

    def _start_one(self, index: int) -> SimNode:
        hostname = f"{self.prefix}-{index:04d}"
        credentials = NodeCredentials(self.root / hostname)
        description = objects.NodeDescription(
            hostname=hostname,
            os="linux",
            arch="x86_64",
            nano_cpus=SIM_CPUS,
            memory_bytes=SIM_MEMORY,
            engine_version="nodesim",
        )
        reply = self._join(credentials, description)
        agent = SwarmAgent(
            credentials,
            managers=[p.addr for p in reply.managers] or [self.manager],
            addr="127.0.0.1",
            description=description,
            on_node=lambda node: None,
            on_managers=lambda managers: None,
        )
        with self._lock:
            executor = SimulatedExecutor(
                random.Random(self.rng.random()), delays=self.executor_delays
            )
        worker = Worker(executor, report=agent.report, node_id=reply.node_id, runner=self.runner)
        agent.tasks = worker
        agent.start()
        return SimNode(hostname=hostname, node_id=reply.node_id, agent=agent, worker=worker)

    def _join(
        self, credentials: NodeCredentials, description: objects.NodeDescription
    ) -> swarm.IssueResponse:
        """Join, retrying while the manager is too busy to answer (hundreds of joins at
        once make its proposals time out): a real node's `swarm join` would be retried
        by its operator; a simulation of 1,000 must not die of one refusal."""
        for attempt in range(JOIN_ATTEMPTS):
            try:
                return join(
                    self.token,
                    remote=self.manager,
                    advertise_addr="127.0.0.1",
                    availability=objects.ACTIVE,
                    description=description,
                    credentials=credentials,
                )
            except Unavailable as exc:
                log.info("%s: join refused (%s); retrying", description.hostname, exc)
                time.sleep(min(0.5 * 2**attempt, 10.0))
        raise Unavailable(f"{description.hostname}: could not join after {JOIN_ATTEMPTS} attempts")

    def wait_ready(self, *, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(n.agent.connected.is_set() for n in self.nodes):
                return True
            time.sleep(0.1)
        return False

    def running(self) -> int:
        """Tasks RUNNING on the simulated nodes, as their workers see them."""
        return sum(
            s.state == objects.TASK_RUNNING
            for n in self.nodes
            for s in n.worker.statuses().values()
        )

    def stop(self) -> None:
        for node in self.nodes:
            node.agent.stop()
        for node in self.nodes:
            node.worker.stop()
        self.runner.stop()

    def __enter__(self) -> NodeSim:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

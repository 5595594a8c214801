"""Network views: what each node must know of the overlay networks it takes part in,
pushed on its dispatcher session (leader only).

A node takes part in a network when one of its live tasks holds an address on it; every
node takes part in `ingress` while some service publishes an ingress port (the routing
mesh answers on every node). For each such network a node gets a `NetworkView`: the
network (VNI, subnet), every endpoint on it (task address, its node's underlay address,
whether it is ready: RUNNING and desired RUNNING, so a task being stopped leaves DNS
and load balancing first) and the services on it (name, mode, VIP, aliases, ingress
ports). Nodes' own ingress addresses are endpoints too (replies of the routing mesh
come back to them). From these the agent programs VXLAN peers, the embedded DNS and
the nftables load balancing: no gossip, the managers' state is the only source.

Level-triggered and coalesced: store events mark networks dirty; at most every
`period` the dirty networks' views are rebuilt and every node whose set changed gets
its whole set again (`NetworkViews`, with an increasing version so an agent never
goes back to an older set). `current(node)` is the set a new session starts with.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from ipaddress import IPv4Interface

from api import objects_pb2 as objects
from api import swarm_pb2 as swarm
from api.networks import ingress_ports
from api.tasks import is_terminal, task_name
from manager import store as st
from manager.loop import FollowingStage
from manager.networkcontrol import CONTAINER_NAME_LABEL

log = logging.getLogger(__name__)

Send = Callable[[str, swarm.SessionMessage], bool]
INGRESS_NODES = "*"  # membership of every node


def _ip(address: str) -> str:
    return str(IPv4Interface(address).ip) if address else ""


class NetViews(FollowingStage):
    thread_name = "netviews"

    def __init__(self, store: st.MemoryStore, *, send: Send, period: float = 0.05) -> None:
        super().__init__()
        self.store = store
        self.send = send
        self.period = period
        self._lock = threading.Lock()
        self._current: dict[str, swarm.NetworkViews] = {}
        self._version = 0

    def current(self, node_id: str) -> swarm.NetworkViews:
        with self._lock:
            views = self._current.get(node_id)
            return views if views is not None else swarm.NetworkViews(version=self._version)

    def follow(self) -> None:
        state = ViewState()
        _, watch = self.store.view_and_watch(
            state.load,
            kinds={"task", "service", "network", "node"},
            maxsize=1_000_000,
            copies=True,  # kept
        )
        self._publish(state, set(state.networks), everyone=True)
        try:
            while not self.stopping.is_set():
                item = watch.get(timeout=self.period)
                dirty: set[str] = set()
                everyone = False
                while item is not None:
                    if isinstance(item, st.Reset):
                        return
                    if isinstance(item, st.Event):
                        everyone |= state.apply(item, dirty)
                    item = watch.get(timeout=0)
                if dirty or everyone:
                    self._publish(state, dirty, everyone=everyone)
                    self.stopping.wait(self.period)  # coalesce bursts
        except st.WatchClosed:
            return
        finally:
            watch.close()

    def _publish(self, state: ViewState, dirty: set[str], *, everyone: bool) -> None:
        before = {n: set(m) for n, m in state.members.items()}
        for network_id in dirty:
            state.rebuild(network_id)
        affected: set[str] = set()
        for network_id in dirty:
            affected |= before.get(network_id, set()) | state.members.get(network_id, set())
        if everyone or INGRESS_NODES in affected:
            affected |= set(state.node_addrs)
        affected.discard(INGRESS_NODES)
        with self._lock:
            self._version += 1
            version = self._version
            for node_id in sorted(affected):
                views = state.views_for(node_id, version)
                old = self._current.get(node_id)
                if old is not None and list(old.networks) == list(views.networks):
                    continue
                self._current[node_id] = views
                self.send(node_id, swarm.SessionMessage(networks=views))


class ViewState:
    """The leader's picture of the networks, updated from store events."""

    def __init__(self) -> None:
        self.networks: dict[str, objects.Network] = {}
        self.services: dict[str, objects.Service] = {}
        self.node_addrs: dict[str, str] = {}
        self.node_ingress: dict[str, str] = {}  # node id -> ingress address
        self.tasks: dict[str, objects.Task] = {}  # live tasks with addresses
        self.on_network: dict[str, set[str]] = {}  # network id -> ids of those tasks
        self.views: dict[str, swarm.NetworkView] = {}
        self.members: dict[str, set[str]] = {}

    def load(self, tx: st.ReadTx) -> None:
        for network in st.find_networks(tx):
            self.networks[network.meta.id] = network
        for service in st.find_services(tx):
            self.services[service.meta.id] = service
        for node in st.find_nodes(tx):
            self._node(node)
        for task in st.find_tasks(tx, copy=False):
            if _live(task):
                kept = objects.Task()
                kept.CopyFrom(task)
                self._keep(kept)

    def _keep(self, task: objects.Task) -> None:
        self._drop(task.meta.id)
        self.tasks[task.meta.id] = task
        for attachment in task.networks:
            self.on_network.setdefault(attachment.network.meta.id, set()).add(task.meta.id)

    def _drop(self, task_id: str) -> None:
        task = self.tasks.pop(task_id, None)
        for attachment in task.networks if task is not None else ():
            self.on_network.get(attachment.network.meta.id, set()).discard(task_id)

    def _node(self, node: objects.Node) -> None:
        self.node_addrs[node.meta.id] = node.status.addr
        if node.ingress.addresses:
            self.node_ingress[node.meta.id] = node.ingress.addresses[0]

    def apply(self, event: st.Event, dirty: set[str]) -> bool:
        """Record a change; mark the networks it touches. True: every node's set."""
        obj, old = event.obj, event.old
        removed = event.action == st.EventAction.REMOVE
        if isinstance(obj, objects.Task):
            for task in (obj, old):
                if isinstance(task, objects.Task):
                    dirty.update(a.network.meta.id for a in task.networks)
            if removed or not _live(obj):
                self._drop(obj.meta.id)
            else:
                self._keep(obj)
            return False
        if isinstance(obj, objects.Service):
            for service in (obj, old):
                if isinstance(service, objects.Service):
                    dirty.update(self._service_networks(service))
            if removed:
                self.services.pop(obj.meta.id, None)
            else:
                self.services[obj.meta.id] = obj
            return False
        if isinstance(obj, objects.Network):
            dirty.add(obj.meta.id)
            if removed:
                self.networks.pop(obj.meta.id, None)
            else:
                self.networks[obj.meta.id] = obj
            return False
        if isinstance(obj, objects.Node):
            before = (self.node_addrs.get(obj.meta.id), self.node_ingress.get(obj.meta.id))
            if removed:
                self.node_addrs.pop(obj.meta.id, None)
                self.node_ingress.pop(obj.meta.id, None)
            else:
                self._node(obj)
            after = (self.node_addrs.get(obj.meta.id), self.node_ingress.get(obj.meta.id))
            if before != after:
                dirty.update(self.networks)
                return True
        return False

    def _service_networks(self, service: objects.Service) -> set[str]:
        ids = {a.target for a in service.spec.task.networks}
        ids |= {v.network_id for v in service.endpoint.virtual_ips}
        if ingress_ports(service.endpoint.ports):
            ids |= {n for n, net in self.networks.items() if net.spec.ingress}
        return ids

    def rebuild(self, network_id: str) -> None:
        network = self.networks.get(network_id)
        if network is None:
            self.views.pop(network_id, None)
            self.members.pop(network_id, None)
            return
        view = swarm.NetworkView(network=network)
        members: set[str] = set()
        for task_id in sorted(self.on_network.get(network_id, ())):
            task = self.tasks[task_id]
            for attachment in task.networks:
                if attachment.network.meta.id != network_id or not task.node_id:
                    continue
                members.add(task.node_id)
                standalone = not task.service_id  # a `run --network` container
                labels = task.spec.container.labels
                view.endpoints.add(
                    id=task.meta.id,
                    name=labels.get(CONTAINER_NAME_LABEL, "") if standalone else task_name(task),
                    service_id=task.service_id,
                    service_name=task.service_name,
                    address=_ip(attachment.addresses[0]) if attachment.addresses else "",
                    node_addr=self.node_addrs.get(task.node_id, ""),
                    aliases=list(attachment.aliases),
                    ready=standalone
                    or (
                        task.status.state == objects.TASK_RUNNING
                        and task.desired_state <= objects.TASK_RUNNING
                    ),
                )
        published = False
        for service in sorted(self.services.values(), key=lambda s: s.spec.name):
            if network.spec.ingress:
                ports = ingress_ports(service.endpoint.ports)
                if not ports:
                    continue
                published = True
                view.services.add(
                    service_id=service.meta.id,
                    name=service.spec.name,
                    mode=service.spec.endpoint.mode or "vip",
                    ports=ports,
                )
                continue
            attached = [a for a in service.spec.task.networks if a.target == network_id]
            if not attached:
                continue
            vip = next(
                (v.addr for v in service.endpoint.virtual_ips if v.network_id == network_id), ""
            )
            view.services.add(
                service_id=service.meta.id,
                name=service.spec.name,
                mode=service.spec.endpoint.mode or "vip",
                vip=_ip(vip),
                aliases=list(attached[0].aliases),
            )
        if network.spec.ingress and published:
            members.add(INGRESS_NODES)
            for node_id, address in sorted(self.node_ingress.items()):
                view.endpoints.add(
                    id=node_id, address=_ip(address), node_addr=self.node_addrs.get(node_id, "")
                )
        self.views[network_id] = view
        self.members[network_id] = members

    def views_for(self, node_id: str, version: int) -> swarm.NetworkViews:
        views = swarm.NetworkViews(version=version)
        for network_id in sorted(self.views):
            members = self.members.get(network_id, set())
            if node_id in members or INGRESS_NODES in members:
                views.networks.append(self.views[network_id])
        return views


def _live(task: objects.Task) -> bool:
    return bool(task.networks) and bool(task.node_id) and not is_terminal(task.status.state)

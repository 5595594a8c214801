"""The allocator: the pipeline stage between the orchestrators and the scheduler.

It takes tasks in NEW and moves them to PENDING once what they need from the cluster is
allocated: an address on every overlay network the task joins (its service's networks,
plus `ingress` when the service publishes ingress ports). It also gives services their
virtual IPs (one per network, vip mode) and every node its address on the ingress
network (the routing mesh's source address on that node). VNIs and subnets come with
the network itself (manager.networkcontrol); published ports with the service
(manager.servicecontrol).

Address bookkeeping is in memory (`api.ipam.Ipam` per network), rebuilt from the store
whenever the stage starts (on every new leader, after a Reset or a watch overflow), so
the store is the only truth: an address is in use while a service's VIP, a node's
ingress address, or a task that is not terminal holds it. A task whose addresses
cannot all be had (subnet exhausted) takes none, stays PENDING with
"could not allocate IP ..." (shown by `service ps`, skipped by the scheduler) and is
retried whenever addresses are freed.

Writes go in batches (the store proposes every 200 writes): one proposal per 200
tasks, never one per task.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface

from api import objects_pb2 as objects
from api.errors import PyswarmError, Unavailable
from api.ipam import Ipam
from api.networks import ingress_ports
from api.tasks import ALLOCATION_FAILED, awaiting_addresses, is_terminal
from manager import store as st
from manager.loop import FollowingStage

log = logging.getLogger(__name__)


@dataclass
class Pools:
    """Addresses in use per network, and who holds each (to free only one's own)."""

    by_network: dict[str, Ipam] = field(default_factory=dict)
    networks: dict[str, objects.Network] = field(default_factory=dict)
    owners: dict[tuple[str, IPv4Address], str] = field(default_factory=dict)
    ingress_id: str = ""

    def add_network(self, network: objects.Network) -> None:
        if network.meta.id in self.by_network or not network.subnet:
            return
        self.networks[network.meta.id] = network
        self.by_network[network.meta.id] = Ipam(
            network.subnet,
            network_name=network.spec.name,
            gateway=network.gateway,
            ip_range=network.spec.ipam.ip_range,
        )
        if network.spec.ingress:
            self.ingress_id = network.meta.id

    def drop_network(self, network_id: str) -> None:
        self.by_network.pop(network_id, None)
        self.networks.pop(network_id, None)
        self.owners = {k: v for k, v in self.owners.items() if k[0] != network_id}
        if self.ingress_id == network_id:
            self.ingress_id = ""

    def reserve(self, network_id: str, address: str, owner: str) -> None:
        ipam = self.by_network.get(network_id)
        if ipam is None or not address:
            return
        ip = IPv4Interface(address).ip
        try:
            ipam.reserve(ip)
        except ValueError as exc:
            log.warning("%s: %s", owner, exc)
            return
        self.owners[(network_id, ip)] = owner

    def allocate(self, network_id: str, owner: str) -> str:
        """An address as "a.b.c.d/len"; Unavailable when the subnet is exhausted."""
        ipam = self.by_network[network_id]
        ip = ipam.allocate()
        self.owners[(network_id, ip)] = owner
        return str(ipam.interface(ip))

    def release(self, network_id: str, address: str, owner: str) -> bool:
        ipam = self.by_network.get(network_id)
        if ipam is None or not address:
            return False
        ip = IPv4Interface(address).ip
        if self.owners.get((network_id, ip)) != owner:
            return False
        del self.owners[(network_id, ip)]
        ipam.release(ip)
        return True


def task_networks(task: objects.Task, pools: Pools) -> list[tuple[str, list[str]]]:
    """(network id, aliases) for every network the task joins, in spec order, then
    ingress when its service publishes ingress ports."""
    wanted = [(a.target, list(a.aliases)) for a in task.spec.networks]
    if pools.ingress_id and ingress_ports(task.endpoint.ports):
        wanted.append((pools.ingress_id, []))
    return wanted


class Allocator(FollowingStage):
    thread_name = "allocator"

    def __init__(self, store: st.MemoryStore, *, wall: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.store = store
        self.wall = wall

    # ---- following the store ----------------------------------------------------

    def follow(self) -> None:
        pools = Pools()
        (new, waiting, services, nodes), watch = self.store.view_and_watch(
            functools.partial(_rebuild, pools=pools),
            kinds={"task", "service", "network", "node"},
            maxsize=1_000_000,
            copies=False,  # read-only
        )
        # Waiting tasks are tried again at once: addresses may have been freed while
        # no allocator ran (a leader change).
        pending: set[str] = set(new) | set(waiting)
        retry: set[str] = set()
        check_services, check_nodes = set(services), set(nodes)
        try:
            while not self.stopping.is_set():
                if pending or check_services or check_nodes:
                    left, freed = self._write(pools, pending, check_services, check_nodes)
                    pending, check_services, check_nodes = set(), set(), set()
                    if freed:  # a VIP given back: the waiting tasks may fit now
                        pending, retry = retry, set()
                    retry |= left
                    if pending:
                        continue
                item = watch.get(timeout=0.2)
                freed = False
                while item is not None:
                    if isinstance(item, st.Reset):
                        return
                    if isinstance(item, st.Event):
                        freed |= self._event(item, pools, pending, check_services, check_nodes)
                    if isinstance(item, st.Commit) and len(pending) >= 1000:
                        break  # a burst: allocate what is there, then read on
                    item = watch.get(timeout=0)
                if freed and retry:
                    pending |= retry
                    retry = set()
        except st.WatchClosed:
            return  # overflowed: re-list
        finally:
            watch.close()

    def _event(
        self,
        event: st.Event,
        pools: Pools,
        pending: set[str],
        services: set[str],
        nodes: set[str],
    ) -> bool:
        """Note what needs allocating; free what a change released. True if freed."""
        obj, old = event.obj, event.old
        removed = event.action == st.EventAction.REMOVE
        if isinstance(obj, objects.Task):
            if not removed and obj.status.state == objects.TASK_NEW:
                pending.add(obj.meta.id)
            if removed or (is_terminal(obj.status.state) and not _terminal(old)):
                return _release_task(obj, pools)
            return False
        if isinstance(obj, objects.Service):
            if removed:
                freed = [
                    pools.release(v.network_id, v.addr, obj.meta.id)
                    for v in obj.endpoint.virtual_ips
                ]
                return any(freed)
            services.add(obj.meta.id)
            return False
        if isinstance(obj, objects.Network):
            if removed:
                pools.drop_network(obj.meta.id)
            else:
                pools.add_network(obj)
                if obj.spec.ingress:
                    nodes.add("*")
            return False
        if isinstance(obj, objects.Node):
            if removed:
                a = obj.ingress
                return pools.release(a.network.meta.id, _first(a.addresses), obj.meta.id)
            if not obj.ingress.addresses:
                nodes.add(obj.meta.id)
        return False

    # ---- writing ------------------------------------------------------------------

    def _write(
        self, pools: Pools, task_ids: set[str], service_ids: set[str], node_ids: set[str]
    ) -> tuple[set[str], bool]:
        """Allocate; the ids of tasks left waiting for addresses, and whether any
        address was given back (a service's VIP on a network it left)."""
        now = self.wall()
        waiting: set[str] = set()
        released: list[str] = []

        def write(batch: st.Batch) -> None:
            for service_id in sorted(service_ids):
                batch.update(
                    functools.partial(
                        _service_vips, service_id=service_id, pools=pools, released=released
                    )
                )
            if "*" in node_ids:
                node_ids.discard("*")
                node_ids.update(self.store.view(lambda tx: [n.meta.id for n in st.find_nodes(tx)]))
            for node_id in sorted(node_ids):
                batch.update(functools.partial(_node_ingress, node_id=node_id, pools=pools))
            for task_id in sorted(task_ids):
                batch.update(
                    functools.partial(
                        _allocate_task, task_id=task_id, pools=pools, now=now, waiting=waiting
                    )
                )

        try:
            self.store.batch(write, max_actions=1000)
        except PyswarmError as exc:
            log.info("allocation interrupted (%s); retrying from the store", exc)
            raise
        return waiting, bool(released)


def _terminal(task: object) -> bool:
    return isinstance(task, objects.Task) and is_terminal(task.status.state)


def _first(addresses: Sequence[str]) -> str:
    return addresses[0] if addresses else ""


def _release_task(task: objects.Task, pools: Pools) -> bool:
    freed = False
    for attachment in task.networks:
        for address in attachment.addresses:
            freed |= pools.release(attachment.network.meta.id, address, task.meta.id)
    return freed


def _rebuild(tx: st.ReadTx, *, pools: Pools) -> tuple[list[str], list[str], list[str], list[str]]:
    """Fill `pools` from the store; what needs allocating: (new tasks, tasks waiting
    for addresses, services, nodes)."""
    for network in st.find_networks(tx):
        pools.add_network(network)
    services = []
    for service in st.find_services(tx):
        for vip in service.endpoint.virtual_ips:
            pools.reserve(vip.network_id, vip.addr, service.meta.id)
        services.append(service.meta.id)
    nodes = []
    for node in st.find_nodes(tx):
        a = node.ingress
        if a.addresses:
            pools.reserve(a.network.meta.id, a.addresses[0], node.meta.id)
        elif pools.ingress_id:
            nodes.append(node.meta.id)
    new, waiting = [], []
    for task in st.find_tasks(tx, copy=False):
        if task.status.state == objects.TASK_NEW:
            new.append(task.meta.id)
        elif task.status.state == objects.TASK_PENDING and awaiting_addresses(task):
            waiting.append(task.meta.id)
        elif not is_terminal(task.status.state):
            for attachment in task.networks:
                for address in attachment.addresses:
                    pools.reserve(attachment.network.meta.id, address, task.meta.id)
    return new, waiting, services, nodes


def _attachment(pools: Pools, network_id: str, address: str) -> objects.NetworkAttachment:
    attachment = objects.NetworkAttachment(addresses=[address])
    attachment.network.CopyFrom(pools.networks[network_id])
    return attachment


def _service_vips(tx: st.Tx, *, service_id: str, pools: Pools, released: list[str]) -> None:
    """One VIP per network of a vip-mode service; none in dnsrr mode."""
    service = st.get_service(tx, service_id)
    if service is None:
        return
    wanted = (
        [a.target for a in service.spec.task.networks if a.target in pools.by_network]
        if service.spec.endpoint.mode in ("", "vip")
        else []
    )
    have = {v.network_id: v.addr for v in service.endpoint.virtual_ips}
    if list(have) == wanted:
        return
    for network_id, addr in have.items():
        if network_id not in wanted and pools.release(network_id, addr, service_id):
            released.append(addr)
    vips = []
    for network_id in wanted:
        vip = have.get(network_id, "")
        if not vip:
            try:
                vip = pools.allocate(network_id, service_id)
            except Unavailable as exc:
                log.warning("service %s: no VIP: %s", service.spec.name, exc)
                continue
        vips.append(objects.VirtualIP(network_id=network_id, addr=vip))
    del service.endpoint.virtual_ips[:]
    service.endpoint.virtual_ips.extend(vips)
    st.update_service(tx, service)


def _node_ingress(tx: st.Tx, *, node_id: str, pools: Pools) -> None:
    node = st.get_node(tx, node_id)
    if node is None or node.ingress.addresses or not pools.ingress_id:
        return
    try:
        address = pools.allocate(pools.ingress_id, node_id)
    except Unavailable as exc:
        log.warning("node %s: no ingress address: %s", node_id, exc)
        return
    node.ingress.CopyFrom(_attachment(pools, pools.ingress_id, address))
    st.update_node(tx, node)


def _allocate_task(tx: st.Tx, *, task_id: str, pools: Pools, now: float, waiting: set[str]) -> None:
    task = st.get_task(tx, task_id)
    if task is None:
        return
    retrying = task.status.state == objects.TASK_PENDING and awaiting_addresses(task)
    if task.status.state != objects.TASK_NEW and not retrying:
        return
    taken: list[objects.NetworkAttachment] = []
    try:
        for network_id, aliases in task_networks(task, pools):
            if network_id not in pools.by_network:
                raise Unavailable(f"network {network_id} not found")
            attachment = _attachment(pools, network_id, pools.allocate(network_id, task_id))
            attachment.aliases.extend(aliases)
            taken.append(attachment)
    except Unavailable as exc:
        for attachment in taken:
            pools.release(attachment.network.meta.id, attachment.addresses[0], task_id)
        waiting.add(task_id)
        err = f"{ALLOCATION_FAILED}: {exc}"
        if task.status.state == objects.TASK_PENDING and task.status.err == err:
            return
        task.status.state = objects.TASK_PENDING
        task.status.message = "pending network allocation"
        task.status.err = err
        task.status.timestamp = now
        st.update_task(tx, task)
        return
    del task.networks[:]
    task.networks.extend(taken)
    task.status.state = objects.TASK_PENDING
    task.status.message = "pending task scheduling"
    task.status.err = ""
    task.status.timestamp = now
    st.update_task(tx, task)

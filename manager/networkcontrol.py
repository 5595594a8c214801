"""The control API's networks: validation, VNI and subnet allocation, store writes.

An overlay network is allocated when it is created, in the creating transaction, so a
network in the store always has its VXLAN id and subnet (the allocator only hands out
addresses inside it):

- VNI: the lowest free id from 4096 up (below that docker's local drivers live);
- subnet: `--subnet` as given, refused if it overlaps another network's; otherwise the
  first block of the cluster's default address pool (`swarm init --default-addr-pool`,
  10.0.0.0/8 cut into /24s) that overlaps no network;
- gateway: `--gateway`, else the subnet's first address (never handed to a task).

The `ingress` network (the routing mesh's; 10.255.0.0/16, docker's historical default)
is made by the first leader of a swarm (`ensure_ingress`). A network is removed only
when no service names it and no live task holds an address on it.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable
from typing import Final

from api import objects_pb2 as objects
from api.errors import Conflict, InvalidArgument, NotFound, Unavailable
from api.ipam import parse_gateway, parse_ip_range, parse_subnet
from api.networks import MTU_OPTIONS, ingress_ports
from api.tasks import is_terminal
from manager import store as st
from manager.ids import new_id
from manager.servicecontrol import validate_name

FIRST_VNI: Final = 4096
MAX_VNI: Final = (1 << 24) - 1
INGRESS_NAME: Final = "ingress"
INGRESS_SUBNET: Final = "10.255.0.0/16"
DEFAULT_POOL: Final = ("10.0.0.0/8",)
DEFAULT_SUBNET_SIZE: Final = 24
MIN_MTU: Final = 68


def validate_network_spec(spec: objects.NetworkSpec) -> None:
    """Syntax and ranges; overlaps are checked against the store when allocating."""
    validate_name("network", spec.name)
    if spec.driver not in ("", "overlay"):
        raise InvalidArgument(
            f"network driver {spec.driver!r} is not supported in swarm scope: use overlay"
        )
    if spec.name.lower() in ("bridge", "host", "none"):
        raise InvalidArgument(f"network name {spec.name} is reserved for a local network")
    ipam = spec.ipam
    if (ipam.gateway or ipam.ip_range) and not ipam.subnet:
        raise InvalidArgument("--gateway and --ip-range need --subnet")
    if ipam.subnet:
        network = parse_subnet(ipam.subnet)
        if network.prefixlen > 29:
            raise InvalidArgument(
                f"subnet {ipam.subnet} is too small: an overlay needs a /29 or larger"
            )
        if ipam.gateway:
            parse_gateway(ipam.gateway, network)
        if ipam.ip_range:
            parse_ip_range(ipam.ip_range, network)
    for key, value in spec.options.items():
        if key in MTU_OPTIONS:
            if not (value.isascii() and value.isdigit()) or not MIN_MTU <= int(value) <= 65535:
                raise InvalidArgument(f"invalid mtu {value!r}: must be a number from 68 to 65535")
        elif key != "com.docker.network.driver.overlay.vxlanid_list":
            raise InvalidArgument(f"unknown network option {key!r} (supported: mtu)")


def allocate(
    tx: st.ReadTx, network: objects.Network, *, pool: Iterable[str], subnet_size: int
) -> None:
    """Give `network` a VNI, a subnet and a gateway that no stored network has."""
    others = st.find_networks(tx)
    used_vnis = {n.vni for n in others}
    network.vni = next(v for v in range(FIRST_VNI, MAX_VNI) if v not in used_vnis)
    taken = [ipaddress.IPv4Network(n.subnet) for n in others if n.subnet]
    if network.spec.ipam.subnet:
        subnet = parse_subnet(network.spec.ipam.subnet)
        for other, net in zip((n for n in others if n.subnet), taken, strict=True):
            if subnet.overlaps(net):
                raise Conflict(f"subnet {subnet} overlaps with network {other.spec.name} ({net})")
    else:
        subnet = _free_block(pool, subnet_size, taken)
    network.subnet = str(subnet)
    gateway = network.spec.ipam.gateway
    network.gateway = str(parse_gateway(gateway, subnet) if gateway else subnet[1])


def _free_block(
    pool: Iterable[str], size: int, taken: list[ipaddress.IPv4Network]
) -> ipaddress.IPv4Network:
    for block in pool:
        base = ipaddress.IPv4Network(block)
        if size < base.prefixlen:
            continue
        for candidate in base.subnets(new_prefix=size):
            if not any(candidate.overlaps(t) for t in taken):
                return candidate
    raise Unavailable("could not find an available, non-overlapping IPv4 address pool")


def network_users(tx: st.ReadTx, network_id: str) -> list[str]:
    """What keeps a network from being removed: services naming it, live tasks on it."""
    users = [
        f"service {s.spec.name}"
        for s in st.find_services(tx)
        if any(a.target == network_id for a in s.spec.task.networks)
    ]
    if users:
        return users
    for task in st.find_tasks(tx, copy=False):
        if not is_terminal(task.status.state) and any(
            a.network.meta.id == network_id for a in task.networks
        ):
            users.append(f"task {task.meta.id[:12]}")
            break
    return users


class Networks:
    """Network operations over one manager's store."""

    def __init__(self, store: st.MemoryStore, *, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock

    def create_network(self, spec: objects.NetworkSpec) -> objects.Network:
        copy = objects.NetworkSpec()
        copy.CopyFrom(spec)
        copy.driver = copy.driver or "overlay"
        validate_network_spec(copy)
        if copy.ingress:
            raise InvalidArgument("the ingress network is made by the swarm itself")
        network = objects.Network(spec=copy)
        network.meta.id = new_id()
        self.store.update(lambda tx: self._create(tx, network))
        return self.get_network(network.meta.id)

    def _create(self, tx: st.Tx, network: objects.Network) -> None:
        cluster = next(iter(st.find_clusters(tx)), None)
        pool = list(cluster.spec.default_addr_pool) if cluster else []
        size = cluster.spec.subnet_size if cluster else 0
        allocate(tx, network, pool=pool or DEFAULT_POOL, subnet_size=size or DEFAULT_SUBNET_SIZE)
        st.create_network(tx, network)

    def ensure_ingress(self) -> None:
        """The routing mesh's network, made once per swarm (by its first leader)."""

        def create(tx: st.Tx) -> None:
            if any(n.spec.ingress for n in st.find_networks(tx)):
                return
            spec = objects.NetworkSpec(name=INGRESS_NAME, driver="overlay", ingress=True)
            spec.ipam.subnet = INGRESS_SUBNET
            network = objects.Network(spec=spec)
            network.meta.id = new_id()
            allocate(tx, network, pool=(), subnet_size=0)
            st.create_network(tx, network)

        self.store.update(create)

    def get_network(self, ref: str) -> objects.Network:
        try:
            return self.store.view(lambda tx: st.resolve_network(tx, ref))
        except NotFound:
            raise NotFound(f"network {ref} not found") from None

    def list_networks(self) -> list[objects.Network]:
        return self.store.view(lambda tx: st.find_networks(tx))

    def remove_network(self, ref: str) -> None:
        def remove(tx: st.Tx) -> None:
            network = st.resolve_network(tx, ref)
            _check_removable(tx, network)
            st.delete_network(tx, network.meta.id)

        self.store.update(remove)

    def prune_networks(self) -> list[str]:
        """Remove every network nothing uses (never ingress); their names."""

        def prune(tx: st.Tx) -> list[str]:
            deleted = []
            for network in st.find_networks(tx):
                if network.spec.ingress or network_users(tx, network.meta.id):
                    continue
                st.delete_network(tx, network.meta.id)
                deleted.append(network.spec.name)
            return sorted(deleted)

        return self.store.update(prune)


CONTAINER_ID_LABEL: Final = "com.docker.container.id"
CONTAINER_NAME_LABEL: Final = "com.docker.container.name"
ATTACH_TIMEOUT: Final = 10.0


def attachment_task(
    network: objects.Network, *, node_id: str, container_id: str, name: str, aliases: list[str]
) -> objects.Task:
    """A standalone container's place on an attachable network: a task without a
    service (swarmkit's attachment tasks), allocated like any other, never scheduled
    or run (it stays PENDING on its node), deleted when the container leaves."""
    task = objects.Task(node_id=node_id, desired_state=objects.TASK_RUNNING)
    task.meta.id = new_id()
    task.spec.networks.add(target=network.meta.id, aliases=aliases)
    task.spec.container.labels[CONTAINER_ID_LABEL] = container_id
    task.spec.container.labels[CONTAINER_NAME_LABEL] = name
    task.status.state = objects.TASK_NEW
    return task


def _attachments_of(tx: st.ReadTx, node_id: str, container_id: str) -> list[objects.Task]:
    return [
        t
        for t in st.find_tasks(tx, by=st.ByNode(node_id))
        if not t.service_id and t.spec.container.labels.get(CONTAINER_ID_LABEL) == container_id
    ]


def attach(
    networks: Networks,
    *,
    node_id: str,
    ref: str,
    container_id: str,
    name: str,
    aliases: list[str],
    deadline: float,
) -> objects.NetworkAttachment:
    """Attach a standalone container to an attachable overlay; its allocated address."""
    store = networks.store

    def create(tx: st.Tx) -> str:
        network = st.resolve_network(tx, ref)
        if network.spec.ingress or not network.spec.attachable:
            raise InvalidArgument(
                f"Could not attach to network {network.spec.name}: it is not attachable"
            )
        for task in _attachments_of(tx, node_id, container_id):
            if task.spec.networks[0].target == network.meta.id:
                return task.meta.id
        task = attachment_task(
            network, node_id=node_id, container_id=container_id, name=name, aliases=aliases
        )
        st.create_task(tx, task)
        return task.meta.id

    task_id = store.update(create)
    while True:
        task = store.view(lambda tx: st.get_task(tx, task_id))
        if task is None:
            raise NotFound("the network attachment was removed")
        if task.networks:
            return task.networks[0]
        if task.status.err or networks.clock() > deadline:
            store.update(lambda tx: st.delete_task(tx, task_id))
            raise Unavailable(task.status.err or "timed out waiting for a network address")
        time.sleep(0.02)


def detach(store: st.MemoryStore, *, node_id: str, container_id: str) -> None:
    def remove(tx: st.Tx) -> None:
        for task in _attachments_of(tx, node_id, container_id):
            st.delete_task(tx, task.meta.id)

    store.update(remove)


def _check_removable(tx: st.ReadTx, network: objects.Network) -> None:
    if network.spec.ingress:
        services = [s.spec.name for s in st.find_services(tx) if ingress_ports(s.endpoint.ports)]
        if services:
            raise Conflict(
                f"ingress network cannot be removed because service {services[0]} depends on it"
            )
    users = network_users(tx, network.meta.id)
    if users:
        raise Conflict(f"network {network.spec.name} is in use by {', '.join(users)}")

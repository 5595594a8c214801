"""The allocator's network side (manager.allocator), running as its real thread on a
MemoryStore: task addresses, service VIPs, node ingress addresses, exhaustion and retry,
and a restart that must rebuild its bookkeeping from the store."""

from __future__ import annotations

import functools
import ipaddress
import time
from collections.abc import Iterator

import pytest

from api import objects_pb2 as objects
from api import swarm_pb2 as swarm
from api.tasks import ALLOCATION_FAILED, is_terminal
from manager import store as st
from manager.allocator import Allocator
from manager.ids import new_id
from manager.networkcontrol import INGRESS_NAME, Networks
from manager.servicecontrol import Services
from tests.daemons import wait_for

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

TIMEOUT = 10.0


class Lab:
    """A store with the control API's networks and services, and helpers that play the
    orchestrator (making tasks) and the agents (moving their states)."""

    def __init__(self) -> None:
        self.store = st.MemoryStore()
        self.networks = Networks(self.store, clock=time.monotonic)
        self.services = Services(self.store, clock=time.time)
        self.allocator = Allocator(self.store)

    # ---- objects ---------------------------------------------------------------

    def network(self, name: str, subnet: str = "") -> objects.Network:
        spec = objects.NetworkSpec(name=name)
        spec.ipam.subnet = subnet
        return self.networks.create_network(spec)

    def service(
        self,
        name: str,
        networks: list[tuple[str, list[str]]],
        *,
        mode: str = "",
        ports: list[objects.PortConfig] | None = None,
    ) -> objects.Service:
        spec = objects.ServiceSpec(name=name, replicas=1)
        spec.task.container.image = "busybox"
        for target, aliases in networks:
            spec.task.networks.add(target=target, aliases=aliases)
        spec.endpoint.mode = mode
        spec.endpoint.ports.extend(ports or [])
        return self.services.create_service(spec)

    def update_service(self, name: str, change: object) -> None:
        current = self.services.get_service(name)
        spec = objects.ServiceSpec()
        spec.CopyFrom(current.spec)
        assert callable(change)
        change(spec)
        request = swarm.UpdateServiceRequest(
            service_id=current.meta.id, version=current.meta.version, spec=spec
        )
        self.services.update_service(request)

    def tasks(self, service_name: str, count: int, *, node: str = "n1") -> list[str]:
        """`count` NEW tasks made as the orchestrator makes them; their ids."""
        service = self.services.get_service(service_name)
        made = []
        for i in range(count):
            task = objects.Task(
                service_id=service.meta.id,
                service_name=service.spec.name,
                slot=i + 1,
                node_id=node,
                desired_state=objects.TASK_RUNNING,
                spec_version=service.spec_version,
            )
            task.meta.id = new_id()
            task.spec.CopyFrom(service.spec.task)
            task.endpoint.CopyFrom(service.endpoint)
            task.status.state = objects.TASK_NEW
            made.append(task)

        def create(tx: st.Tx) -> None:
            for task in made:
                st.create_task(tx, task)

        self.store.update(create)
        return [t.meta.id for t in made]

    def node(self, node_id: str, addr: str = "192.0.2.1") -> None:
        node = objects.Node()
        node.meta.id = node_id
        node.spec.name = node_id
        node.status.addr = addr
        node.status.state = objects.READY
        self.store.update(lambda tx: st.create_node(tx, node))

    def set_state(self, task_id: str, state: objects.TaskState.ValueType) -> None:
        def change(tx: st.Tx) -> None:
            task = st.get_task(tx, task_id)
            assert task is not None
            task.status.state = state
            st.update_task(tx, task)

        self.store.update(change)

    def delete_task(self, task_id: str) -> None:
        self.store.update(lambda tx: st.delete_task(tx, task_id))

    # ---- reads -----------------------------------------------------------------

    def task(self, task_id: str) -> objects.Task:
        found = self.store.view(lambda tx: st.get_task(tx, task_id))
        assert found is not None
        return found

    def all_tasks(self) -> list[objects.Task]:
        return self.store.view(lambda tx: st.find_tasks(tx))

    def get_service(self, name: str) -> objects.Service:
        return self.services.get_service(name)

    def get_node(self, node_id: str) -> objects.Node:
        found = self.store.view(lambda tx: st.get_node(tx, node_id))
        assert found is not None
        return found

    def settled(self, ids: list[str]) -> bool:
        """Every task out of NEW (allocated, or waiting for addresses)."""
        return all(self.task(i).status.state != objects.TASK_NEW for i in ids)

    def wait_settled(self, ids: list[str]) -> None:
        wait_for(lambda: self.settled(ids), timeout=TIMEOUT, what="tasks out of NEW")


def allocated(task: objects.Task) -> bool:
    return task.status.state == objects.TASK_PENDING and not task.status.err


def waiting(task: objects.Task) -> bool:
    return task.status.state == objects.TASK_PENDING and task.status.err.startswith(
        ALLOCATION_FAILED
    )


def holders(store: st.MemoryStore) -> dict[tuple[str, str], list[str]]:
    """Every address held by a live holder (task not terminal, service VIP, node ingress),
    by (network id, ip), with who holds it; and checks each is a host of its subnet and
    not the gateway."""

    def read(
        tx: st.ReadTx,
    ) -> tuple[
        list[objects.Network], list[objects.Task], list[objects.Service], list[objects.Node]
    ]:
        return (
            st.find_networks(tx),
            st.find_tasks(tx),
            st.find_services(tx),
            st.find_nodes(tx),
        )

    networks, tasks, services, nodes = store.view(read)
    by_id = {n.meta.id: n for n in networks}
    found: dict[tuple[str, str], list[str]] = {}

    def note(network_id: str, address: str, who: str) -> None:
        network = by_id[network_id]
        subnet = ipaddress.IPv4Network(network.subnet)
        iface = ipaddress.IPv4Interface(address)
        assert iface.network == subnet, f"{who}: {address} not in {subnet}"
        assert iface.ip not in (subnet.network_address, subnet.broadcast_address), who
        assert str(iface.ip) != network.gateway, f"{who} holds the gateway {address}"
        found.setdefault((network_id, str(iface.ip)), []).append(who)

    for task in tasks:
        if is_terminal(task.status.state):
            continue
        for attachment in task.networks:
            for address in attachment.addresses:
                note(attachment.network.meta.id, address, f"task {task.meta.id}")
    for service in services:
        for vip in service.endpoint.virtual_ips:
            note(vip.network_id, vip.addr, f"vip of {service.spec.name}")
    for node in nodes:
        for address in node.ingress.addresses:
            note(node.ingress.network.meta.id, address, f"node {node.meta.id}")
    return found


def assert_no_address_shared(store: st.MemoryStore) -> int:
    """No address is held twice; the number of addresses held."""
    found = holders(store)
    shared = {k: v for k, v in found.items() if len(v) > 1}
    assert not shared, f"addresses held twice: {shared}"
    return len(found)


@pytest.fixture
def lab() -> Iterator[Lab]:
    lab = Lab()
    yield lab
    lab.allocator.stop()


# ---- tasks ------------------------------------------------------------------------------


def test_a_new_task_gets_pending_with_one_attachment_in_the_subnet(lab: Lab) -> None:
    net = lab.network("backend")
    lab.service("api", [("backend", ["db", "store"])])
    lab.allocator.start()
    [task_id] = lab.tasks("api", 1)
    wait_for(lambda: allocated(lab.task(task_id)), timeout=TIMEOUT, what="allocated")

    task = lab.task(task_id)
    assert task.status.message == "pending task scheduling"
    assert len(task.networks) == 1
    attachment = task.networks[0]
    assert attachment.network.meta.id == net.meta.id
    assert attachment.network.vni == net.vni
    assert attachment.network.subnet == net.subnet
    assert list(attachment.aliases) == ["db", "store"]
    [address] = attachment.addresses
    iface = ipaddress.IPv4Interface(address)
    assert iface.network == ipaddress.IPv4Network(net.subnet)  # "a.b.c.d/24"
    assert str(iface.ip) != net.gateway
    assert_no_address_shared(lab.store)


def test_a_task_without_networks_is_still_moved_to_pending(lab: Lab) -> None:
    lab.service("plain", [])
    lab.allocator.start()
    [task_id] = lab.tasks("plain", 1)
    wait_for(lambda: allocated(lab.task(task_id)), timeout=TIMEOUT, what="allocated")
    assert list(lab.task(task_id).networks) == []


def test_tasks_on_two_networks_get_an_address_on_each_in_spec_order(lab: Lab) -> None:
    a = lab.network("a")
    b = lab.network("b")
    lab.service("both", [("b", []), ("a", ["x"])])
    lab.allocator.start()
    ids = lab.tasks("both", 3)
    lab.wait_settled(ids)
    for task_id in ids:
        task = lab.task(task_id)
        assert allocated(task)
        assert [n.network.meta.id for n in task.networks] == [b.meta.id, a.meta.id]
        assert [list(n.aliases) for n in task.networks] == [[], ["x"]]
    assert assert_no_address_shared(lab.store) == 3 * 2 + 2  # and a VIP on each network


def test_a_service_publishing_an_ingress_port_gets_an_ingress_attachment(lab: Lab) -> None:
    lab.networks.ensure_ingress()
    ingress = lab.networks.get_network(INGRESS_NAME)
    net = lab.network("front")
    lab.service("web", [("front", [])], ports=[objects.PortConfig(target_port=80)])
    lab.service(
        "hosted",
        [("front", [])],
        ports=[objects.PortConfig(target_port=80, published_port=8080, publish_mode="host")],
    )
    lab.allocator.start()
    [web] = lab.tasks("web", 1)
    [hosted] = lab.tasks("hosted", 1)
    lab.wait_settled([web, hosted])

    task = lab.task(web)
    assert [a.network.meta.id for a in task.networks] == [net.meta.id, ingress.meta.id]
    ingress_attachment = task.networks[1]
    assert ingress_attachment.network.spec.ingress
    assert ipaddress.IPv4Interface(ingress_attachment.addresses[0]).network == (
        ipaddress.IPv4Network("10.255.0.0/16")
    )
    # host-mode publishing does not use the routing mesh
    assert [a.network.meta.id for a in lab.task(hosted).networks] == [net.meta.id]
    assert_no_address_shared(lab.store)


# ---- service VIPs ------------------------------------------------------------------------


def test_vip_services_get_one_vip_per_network_dnsrr_none(lab: Lab) -> None:
    a = lab.network("a")
    b = lab.network("b")
    lab.service("vip", [("a", []), ("b", [])])
    lab.service("rr", [("a", []), ("b", [])], mode="dnsrr")
    lab.allocator.start()
    wait_for(
        lambda: len(lab.get_service("vip").endpoint.virtual_ips) == 2,
        timeout=TIMEOUT,
        what="two VIPs",
    )
    vips = lab.get_service("vip").endpoint.virtual_ips
    assert [v.network_id for v in vips] == [a.meta.id, b.meta.id]
    for vip, net in zip(vips, (a, b), strict=True):
        assert ipaddress.IPv4Interface(vip.addr).network == ipaddress.IPv4Network(net.subnet)
    # dnsrr: a task allocated after the services were seen proves they were looked at
    [task_id] = lab.tasks("rr", 1)
    wait_for(lambda: allocated(lab.task(task_id)), timeout=TIMEOUT, what="allocated")
    assert list(lab.get_service("rr").endpoint.virtual_ips) == []
    assert_no_address_shared(lab.store)


def to_dnsrr(spec: objects.ServiceSpec) -> None:
    spec.endpoint.mode = "dnsrr"


def test_switching_vip_to_dnsrr_frees_the_vip(lab: Lab) -> None:
    lab.network("tiny", "10.77.0.0/29")  # .2-.6: five addresses
    lab.service("api", [("tiny", [])])
    lab.allocator.start()
    wait_for(lambda: lab.get_service("api").endpoint.virtual_ips, timeout=TIMEOUT, what="VIP")
    ids = lab.tasks("api", 4)
    lab.wait_settled(ids)
    assert all(allocated(lab.task(i)) for i in ids)  # the VIP holds the fifth

    lab.update_service("api", to_dnsrr)
    wait_for(
        lambda: not lab.get_service("api").endpoint.virtual_ips,
        timeout=TIMEOUT,
        what="the VIP dropped",
    )
    [more] = lab.tasks("api", 1)
    wait_for(lambda: allocated(lab.task(more)), timeout=TIMEOUT, what="the freed VIP used")
    assert assert_no_address_shared(lab.store) == 5


def test_a_vip_freed_by_a_mode_switch_is_given_to_a_waiting_task(lab: Lab) -> None:
    lab.network("tiny", "10.77.0.0/29")
    lab.service("api", [("tiny", [])])
    lab.allocator.start()
    wait_for(lambda: lab.get_service("api").endpoint.virtual_ips, timeout=TIMEOUT, what="VIP")
    ids = lab.tasks("api", 5)
    lab.wait_settled(ids)
    assert sum(allocated(lab.task(i)) for i in ids) == 4  # the VIP holds the fifth
    [blocked] = [i for i in ids if waiting(lab.task(i))]

    lab.update_service("api", to_dnsrr)
    wait_for(
        lambda: not lab.get_service("api").endpoint.virtual_ips,
        timeout=TIMEOUT,
        what="the VIP dropped",
    )
    wait_for(lambda: allocated(lab.task(blocked)), timeout=3, what="the freed VIP used")
    assert assert_no_address_shared(lab.store) == 5


def test_removing_a_service_frees_its_vip(lab: Lab) -> None:
    lab.network("tiny", "10.77.0.0/29")
    lab.service("old", [("tiny", [])])
    lab.service("new", [("tiny", [])], mode="dnsrr")
    lab.allocator.start()
    wait_for(lambda: lab.get_service("old").endpoint.virtual_ips, timeout=TIMEOUT, what="VIP")
    ids = lab.tasks("new", 5)
    lab.wait_settled(ids)
    [blocked] = [i for i in ids if waiting(lab.task(i))]
    lab.services.remove_service("old")
    wait_for(lambda: allocated(lab.task(blocked)), timeout=TIMEOUT, what="the freed VIP used")
    assert assert_no_address_shared(lab.store) == 5


# ---- nodes -----------------------------------------------------------------------------


def test_nodes_get_an_ingress_address_once_ingress_exists(lab: Lab) -> None:
    lab.node("n1")
    lab.node("n2")
    lab.allocator.start()
    lab.service("plain", [])
    [probe] = lab.tasks("plain", 1)  # the allocator has caught up past the nodes
    wait_for(lambda: allocated(lab.task(probe)), timeout=TIMEOUT, what="allocated")
    assert not lab.get_node("n1").HasField("ingress")

    lab.networks.ensure_ingress()
    ingress = lab.networks.get_network(INGRESS_NAME)
    for node_id in ("n1", "n2"):
        wait_for(
            lambda: lab.get_node(node_id).ingress.addresses,  # noqa: B023
            timeout=TIMEOUT,
            what=f"{node_id}'s ingress address",
        )
    lab.node("n3")
    wait_for(lambda: lab.get_node("n3").ingress.addresses, timeout=TIMEOUT, what="n3's address")
    for node_id in ("n1", "n2", "n3"):
        attachment = lab.get_node(node_id).ingress
        assert attachment.network.meta.id == ingress.meta.id
        assert attachment.network.vni == ingress.vni
        assert ipaddress.IPv4Interface(attachment.addresses[0]).network == (
            ipaddress.IPv4Network(ingress.subnet)
        )
    assert assert_no_address_shared(lab.store) == 3


def test_a_node_made_before_the_allocator_starts_gets_its_ingress_address(lab: Lab) -> None:
    lab.networks.ensure_ingress()
    lab.node("n1")
    lab.allocator.start()
    wait_for(lambda: lab.get_node("n1").ingress.addresses, timeout=TIMEOUT, what="address")


# ---- exhaustion -------------------------------------------------------------------------


def test_an_exhausted_subnet_leaves_tasks_waiting_then_retries_when_freed(lab: Lab) -> None:
    # a /29 is 8 addresses: less the network, the broadcast and the gateway, 5 for tasks
    net = lab.network("tiny", "10.77.0.0/29")
    lab.service("rr", [("tiny", [])], mode="dnsrr")  # no VIP: every address for tasks
    lab.allocator.start()
    ids = lab.tasks("rr", 7)
    lab.wait_settled(ids)

    got = [i for i in ids if allocated(lab.task(i))]
    blocked = [i for i in ids if waiting(lab.task(i))]
    assert (len(got), len(blocked)) == (5, 2)
    for task_id in blocked:
        task = lab.task(task_id)
        assert task.status.err.startswith("could not allocate IP")
        assert "no available IPv4 addresses on network tiny" in task.status.err
        assert list(task.networks) == []  # nothing partial
    addresses = {lab.task(i).networks[0].addresses[0] for i in got}
    assert addresses == {f"10.77.0.{n}/29" for n in range(2, 7)}
    assert net.gateway == "10.77.0.1"

    lab.set_state(got[0], objects.TASK_SHUTDOWN)
    wait_for(
        lambda: sum(allocated(lab.task(i)) for i in blocked) == 1,
        timeout=TIMEOUT,
        what="one waiting task allocated after a shutdown",
    )
    assert assert_no_address_shared(lab.store) == 5

    lab.delete_task(got[1])
    wait_for(
        lambda: all(allocated(lab.task(i)) for i in blocked),
        timeout=TIMEOUT,
        what="the other waiting task allocated after a delete",
    )
    assert assert_no_address_shared(lab.store) == 5


def test_task_addresses_come_from_the_networks_ip_range(lab: Lab) -> None:
    spec = objects.NetworkSpec(name="ranged")
    spec.ipam.subnet = "10.90.0.0/24"
    spec.ipam.ip_range = "10.90.0.128/29"
    lab.networks.create_network(spec)
    lab.service("rr", [("ranged", [])], mode="dnsrr")
    lab.allocator.start()
    ids = lab.tasks("rr", 6)
    lab.wait_settled(ids)
    pool = ipaddress.IPv4Network("10.90.0.128/29")
    for task_id in ids:
        task = lab.task(task_id)
        assert allocated(task)
        iface = ipaddress.IPv4Interface(task.networks[0].addresses[0])
        assert iface.ip in pool and iface.network.prefixlen == 24
    assert assert_no_address_shared(lab.store) == 6


def test_a_task_failing_on_its_second_network_holds_nothing_on_the_first(lab: Lab) -> None:
    lab.network("roomy", "10.78.0.0/29")
    lab.network("full", "10.79.0.0/29")
    lab.service("filler", [("full", [])], mode="dnsrr")
    lab.service("both", [("roomy", []), ("full", [])], mode="dnsrr")
    lab.service("later", [("roomy", [])], mode="dnsrr")
    lab.allocator.start()
    fill = lab.tasks("filler", 5)
    lab.wait_settled(fill)
    assert all(allocated(lab.task(i)) for i in fill)

    [stuck] = lab.tasks("both", 1)
    lab.wait_settled([stuck])
    assert waiting(lab.task(stuck))
    assert list(lab.task(stuck).networks) == []
    # had the failed task kept its address on "roomy", only four of these would fit
    later = lab.tasks("later", 5)
    lab.wait_settled(later)
    assert all(allocated(lab.task(i)) for i in later)
    assert assert_no_address_shared(lab.store) == 10


def filled(lab: Lab, ids: list[str], *, room: int) -> bool:
    """All tasks settled, and as many allocated as there is room for."""
    return lab.settled(ids) and sum(allocated(lab.task(i)) for i in ids) == min(room, len(ids))


def test_waiting_tasks_do_not_get_addresses_twice_under_churn(lab: Lab) -> None:
    lab.network("small", "10.80.0.0/28")  # .2-.14: 13 addresses
    lab.service("churn", [("small", [])])  # vip: 12 left for tasks
    lab.allocator.start()
    ids = lab.tasks("churn", 20)
    lab.wait_settled(ids)
    assert sum(allocated(lab.task(i)) for i in ids) == 12
    for round_ in range(4):
        holding = [i for i in ids if allocated(lab.task(i))]
        for task_id in holding[:3]:
            lab.set_state(task_id, objects.TASK_FAILED)
        ids = [i for i in ids if i not in holding[:3]]
        ids += lab.tasks("churn", 2)
        wait_for(
            functools.partial(filled, lab, list(ids), room=12),
            timeout=TIMEOUT,
            what=f"round {round_} allocated",
        )
        assert assert_no_address_shared(lab.store) == 13


# ---- restart ---------------------------------------------------------------------------


def test_a_restarted_allocator_does_not_hand_out_held_addresses(lab: Lab) -> None:
    lab.networks.ensure_ingress()
    lab.node("n1")
    lab.network("small", "10.81.0.0/28")
    lab.service("web", [("small", [])], ports=[objects.PortConfig(target_port=80)])
    lab.allocator.start()
    first = lab.tasks("web", 6)
    lab.wait_settled(first)
    wait_for(lambda: lab.get_node("n1").ingress.addresses, timeout=TIMEOUT, what="node address")
    held = assert_no_address_shared(lab.store)
    lab.allocator.stop()

    lab.allocator = Allocator(lab.store)  # a new leader's
    lab.allocator.start()
    second = lab.tasks("web", 6)
    lab.wait_settled(second)
    assert all(allocated(lab.task(i)) for i in first + second)
    assert assert_no_address_shared(lab.store) == held + 2 * 6
    # and the old ones were not touched
    assert all(len(lab.task(i).networks) == 2 for i in first)


def test_tasks_made_while_no_allocator_runs_are_allocated_at_start(lab: Lab) -> None:
    lab.network("backend")
    lab.service("api", [("backend", [])])
    ids = lab.tasks("api", 50)
    lab.allocator.start()
    lab.wait_settled(ids)
    assert all(allocated(lab.task(i)) for i in ids)
    assert assert_no_address_shared(lab.store) == 51


def test_waiting_tasks_are_retried_by_a_restarted_allocator(lab: Lab) -> None:
    lab.network("tiny", "10.77.0.0/29")
    lab.service("rr", [("tiny", [])], mode="dnsrr")
    lab.allocator.start()
    ids = lab.tasks("rr", 7)
    lab.wait_settled(ids)
    got = [i for i in ids if allocated(lab.task(i))]
    blocked = [i for i in ids if waiting(lab.task(i))]
    assert len(blocked) == 2
    lab.allocator.stop()

    for task_id in got[:2]:  # freed while no allocator runs
        lab.set_state(task_id, objects.TASK_SHUTDOWN)
    lab.allocator = Allocator(lab.store)
    lab.allocator.start()
    wait_for(
        lambda: all(allocated(lab.task(i)) for i in blocked),
        timeout=3,
        what="waiting tasks allocated after a restart",
    )
    assert_no_address_shared(lab.store)

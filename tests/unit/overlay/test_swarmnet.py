"""SwarmNetworks' answers from the leader's views: DNS names per container and the
routing mesh's ports (pure: no kernel; the kernel side is tested in the e2e lab)."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from api import objects_pb2 as objects
from api import swarm_pb2 as swarm
from overlay import swarmnet
from overlay.bridge import BridgeDriver

pytestmark = pytest.mark.unit


class FakeDns:
    def __init__(self, lookup: Callable[[str, str], list[IPv4Address] | None]) -> None:
        self.lookup = lookup

    def close(self) -> None:
        pass


def view(network_id: str, *, ingress: bool = False) -> swarm.NetworkView:
    v = swarm.NetworkView()
    v.network.meta.id = network_id
    v.network.spec.name = network_id
    v.network.spec.ingress = ingress
    v.network.vni = 4097
    v.network.subnet = "10.0.1.0/24"
    return v


def endpoint(v: swarm.NetworkView, address: str, *, service: str, ready: bool = True) -> None:
    v.endpoints.add(
        id=f"t{address}",
        name=f"{service}.1.t{address}",
        service_id=f"id-{service}",
        service_name=service,
        address=address,
        node_addr="198.18.1.11",
        ready=ready,
    )


@pytest.fixture
def nets(tmp_path: Path) -> swarmnet.SwarmNetworks:
    bridge = BridgeDriver(state_dir=tmp_path, netns_prefix="pstest-unit-")
    return swarmnet.SwarmNetworks(
        bridge,
        state_dir=tmp_path,
        prefix="pstest-unit-",
        dns_factory=FakeDns,  # type: ignore[arg-type]
    )


def attach(nets: swarmnet.SwarmNetworks, container: str, *network_ids: str) -> None:
    nets._containers[container] = [
        swarmnet.Local(n, 4097, "ns", "ve", "10.0.1.9/24", 1450) for n in network_ids
    ]


def ips(*addresses: str) -> list[IPv4Address]:
    return [IPv4Address(a) for a in addresses]


def test_services_resolve_to_the_vip_and_tasks_to_ready_addresses(
    nets: swarmnet.SwarmNetworks,
) -> None:
    front = view("front")
    endpoint(front, "10.0.1.3", service="web")
    endpoint(front, "10.0.1.4", service="web")
    endpoint(front, "10.0.1.5", service="web", ready=False)  # being stopped
    front.services.add(service_id="id-web", name="web", mode="vip", vip="10.0.1.2",
                       aliases=["www"])  # fmt: skip
    nets._views = {"front": front}
    attach(nets, "c1", "front")
    nets._reindex()
    assert nets._lookup("c1", "web") == ips("10.0.1.2")
    assert nets._lookup("c1", "www") == ips("10.0.1.2")
    assert nets._lookup("c1", "tasks.web") == ips("10.0.1.3", "10.0.1.4")
    assert nets._lookup("c1", "web.1.t10.0.1.3") == ips("10.0.1.3")
    assert nets._lookup("c1", "web.1.t10.0.1.5") is None  # not ready: not known
    assert nets._lookup("c1", "example.org") is None  # forwarded


def test_dnsrr_answers_task_addresses_and_empty_when_none_ready(
    nets: swarmnet.SwarmNetworks,
) -> None:
    front = view("front")
    endpoint(front, "10.0.1.3", service="rr")
    front.services.add(service_id="id-rr", name="rr", mode="dnsrr")
    front.services.add(service_id="id-idle", name="idle", mode="dnsrr")
    nets._views = {"front": front}
    attach(nets, "c1", "front")
    nets._reindex()
    assert nets._lookup("c1", "rr") == ips("10.0.1.3")
    assert nets._lookup("c1", "idle") == []  # a swarm name: answered, not forwarded


def test_a_container_only_sees_its_own_networks(nets: swarmnet.SwarmNetworks) -> None:
    front, back = view("front"), view("back")
    front.services.add(service_id="id-web", name="web", mode="vip", vip="10.0.1.2")
    back.services.add(service_id="id-db", name="db", mode="vip", vip="10.0.2.2")
    nets._views = {"front": front, "back": back}
    attach(nets, "c1", "front")
    attach(nets, "c2", "back")
    nets._reindex()
    assert nets._lookup("c1", "web") == ips("10.0.1.2")
    assert nets._lookup("c1", "db") is None
    assert nets._lookup("c2", "db") == ips("10.0.2.2")
    assert nets._lookup("c2", "web") is None


def test_ingress_ports_use_ready_tasks_of_their_service() -> None:
    ingress = view("ingress", ingress=True)
    endpoint(ingress, "10.255.0.5", service="pub")
    endpoint(ingress, "10.255.0.6", service="pub", ready=False)
    ingress.endpoints.add(id="node1", address="10.255.0.2", node_addr="198.18.0.11")
    ingress.services.add(
        service_id="id-pub",
        name="pub",
        ports=[objects.PortConfig(protocol="tcp", target_port=80, published_port=8080)],
    )
    (port,) = swarmnet._ingress_ports(ingress)
    assert (port.protocol, port.published, port.target) == ("tcp", 8080, 80)
    assert port.backends == (IPv4Address("10.255.0.5"),)

"""Services' networks and published ports (manager.servicecontrol: `_resolve_networks`,
`_allocate_ports`) against a real in-memory store, with networks made through
manager.networkcontrol."""

from __future__ import annotations

import time

import pytest

from api import objects_pb2 as objects
from api import swarm_pb2 as swarm
from api.errors import Conflict, InvalidArgument
from manager import store as st
from manager.networkcontrol import INGRESS_NAME, Networks
from manager.servicecontrol import DYNAMIC_PORTS, Services

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


def port(
    target: int, published: int = 0, *, protocol: str = "tcp", mode: str = ""
) -> objects.PortConfig:
    return objects.PortConfig(
        target_port=target, published_port=published, protocol=protocol, publish_mode=mode
    )


def service_spec(
    name: str,
    *,
    ports: list[objects.PortConfig] | None = None,
    networks: list[tuple[str, list[str]]] | None = None,
    mode: str = "",
) -> objects.ServiceSpec:
    spec = objects.ServiceSpec(name=name, replicas=1)
    spec.task.container.image = "busybox"
    spec.endpoint.mode = mode
    spec.endpoint.ports.extend(ports or [])
    for target, aliases in networks or []:
        spec.task.networks.add(target=target, aliases=aliases)
    return spec


class Control:
    def __init__(self) -> None:
        self.store = st.MemoryStore()
        self.networks = Networks(self.store, clock=time.monotonic)
        self.services = Services(self.store, clock=time.time)
        self.networks.ensure_ingress()

    def create(self, name: str, **kwargs: object) -> objects.Service:
        return self.services.create_service(service_spec(name, **kwargs))  # type: ignore[arg-type]

    def update(self, name: str, change: object) -> objects.Service:
        current = self.services.get_service(name)
        spec = objects.ServiceSpec()
        spec.CopyFrom(current.spec)
        assert callable(change)
        change(spec)
        return self.services.update_service(
            swarm.UpdateServiceRequest(
                service_id=current.meta.id, version=current.meta.version, spec=spec
            )
        )

    def stored(self) -> dict[str, objects.Service]:
        return {s.spec.name: s for s in self.store.view(lambda tx: st.find_services(tx))}

    def published(self, name: str) -> list[tuple[str, int, int, str]]:
        return [
            (p.protocol, p.published_port, p.target_port, p.publish_mode)
            for p in self.services.get_service(name).endpoint.ports
        ]


@pytest.fixture
def control() -> Control:
    return Control()


# ---- ingress ports --------------------------------------------------------------------


def test_the_same_ingress_port_twice_is_a_conflict_naming_the_holder(control: Control) -> None:
    control.create("web", ports=[port(80, 8080)])
    with pytest.raises(Conflict, match="port '8080' is already in use by service 'web'"):
        control.create("other", ports=[port(81, 8080)])
    assert sorted(control.stored()) == ["web"]


def test_an_update_to_a_taken_port_is_refused_and_changes_nothing(control: Control) -> None:
    control.create("web", ports=[port(80, 8080)])
    before = control.create("api", ports=[port(80, 8081)])

    def steal(spec: objects.ServiceSpec) -> None:
        spec.endpoint.ports[0].published_port = 8080

    with pytest.raises(Conflict, match="already in use"):
        control.update("api", steal)
    after = control.services.get_service("api")
    assert after == before
    assert control.published("api") == [("tcp", 8081, 80, "ingress")]


def test_a_removed_services_port_is_free_again(control: Control) -> None:
    control.create("web", ports=[port(80, 8080)])
    control.services.remove_service("web")
    control.create("next", ports=[port(80, 8080)])
    assert control.published("next") == [("tcp", 8080, 80, "ingress")]


def test_an_update_keeping_its_own_port_is_no_conflict(control: Control) -> None:
    control.create("web", ports=[port(80, 8080)])

    def relabel(spec: objects.ServiceSpec) -> None:
        spec.labels["x"] = "y"

    control.update("web", relabel)
    assert control.published("web") == [("tcp", 8080, 80, "ingress")]


def test_the_same_port_with_another_protocol_is_fine(control: Control) -> None:
    control.create("dns-tcp", ports=[port(53, 53, protocol="tcp")])
    control.create("dns-udp", ports=[port(53, 53, protocol="udp")])
    assert control.published("dns-udp") == [("udp", 53, 53, "ingress")]
    with pytest.raises(Conflict):
        control.create("again", ports=[port(53, 53, protocol="udp")])


def test_an_empty_protocol_is_tcp(control: Control) -> None:
    control.create("web", ports=[port(80, 8080, protocol="")])
    assert control.published("web") == [("tcp", 8080, 80, "ingress")]
    with pytest.raises(Conflict):
        control.create("other", ports=[port(80, 8080, protocol="tcp")])


def test_published_zero_gets_a_dynamic_port_kept_across_updates(control: Control) -> None:
    control.create("first", ports=[port(80)])
    control.create("second", ports=[port(80), port(443)])
    [(_, first, _, mode)] = control.published("first")
    second = [p for _, p, _, _ in control.published("second")]
    assert mode == "ingress"
    for number in (first, *second):
        assert number in DYNAMIC_PORTS
        assert 30000 <= number <= 32767
    assert len({first, *second}) == 3

    def change_image(spec: objects.ServiceSpec) -> None:
        spec.task.container.image = "busybox:2"

    def add_port(spec: objects.ServiceSpec) -> None:
        spec.endpoint.ports.append(port(8443))

    control.update("second", change_image)
    assert [p for _, p, _, _ in control.published("second")] == second
    control.update("second", add_port)
    after = [p for _, p, _, _ in control.published("second")]
    assert after[:2] == second
    assert after[2] in DYNAMIC_PORTS and after[2] not in (first, *second)
    # the spec keeps what the user asked for: 0
    assert [
        p.published_port for p in control.services.get_service("second").spec.endpoint.ports
    ] == [
        0,
        0,
        0,
    ]


def test_a_dynamic_port_skips_ports_taken_explicitly(control: Control) -> None:
    control.create("fixed", ports=[port(80, 30000)])
    control.create("dynamic", ports=[port(80)])
    assert control.published("dynamic") == [("tcp", 30001, 80, "ingress")]


def test_a_dynamic_port_skips_the_services_own_explicit_ports_with_empty_protocol(
    control: Control,
) -> None:
    control.create("svc", ports=[port(80, protocol=""), port(81, 30000, protocol="")])
    published = sorted(p for _, p, _, _ in control.published("svc"))
    assert published[0] == 30000 and published[1] in DYNAMIC_PORTS


def test_the_dynamic_range_running_out_is_a_conflict(control: Control) -> None:
    half = len(DYNAMIC_PORTS) // 2
    control.create("a", ports=[port(1 + i, p) for i, p in enumerate(DYNAMIC_PORTS[:half])])
    control.create("b", ports=[port(1 + i, p) for i, p in enumerate(DYNAMIC_PORTS[half:])])
    with pytest.raises(Conflict, match="no free port left in the dynamic range"):
        control.create("c", ports=[port(80)])
    control.create("c", ports=[port(80, protocol="udp")])  # udp has room


def test_host_mode_ports_do_not_conflict_at_the_manager(control: Control) -> None:
    control.create("one", ports=[port(80, 8080, mode="host")])
    control.create("two", ports=[port(80, 8080, mode="host")])
    control.create("mesh", ports=[port(80, 8080)])  # host mode does not hold the mesh's
    assert control.published("two") == [("tcp", 8080, 80, "host")]
    assert control.published("mesh") == [("tcp", 8080, 80, "ingress")]


def test_a_host_mode_port_without_a_number_is_left_to_the_node(control: Control) -> None:
    control.create("h", ports=[port(80, mode="host")])
    assert control.published("h") == [("tcp", 0, 80, "host")]


def test_dnsrr_with_an_ingress_port_is_refused(control: Control) -> None:
    with pytest.raises(InvalidArgument, match="can't be used with dnsrr mode"):
        control.create("rr", ports=[port(80, 8080)], mode="dnsrr")
    with pytest.raises(InvalidArgument, match="dnsrr"):
        control.create("rr", ports=[port(80)], mode="dnsrr")
    assert control.stored() == {}
    control.create("rr", ports=[port(80, 8080, mode="host")], mode="dnsrr")  # host mode is fine
    control.create("vip", ports=[port(80, 8080)])  # 8080 was not held by the refusals

    def to_dnsrr(spec: objects.ServiceSpec) -> None:
        spec.endpoint.mode = "dnsrr"

    with pytest.raises(InvalidArgument, match="dnsrr"):
        control.update("vip", to_dnsrr)
    assert control.services.get_service("vip").spec.endpoint.mode == ""


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (port(0, 8080), "invalid port"),
        (port(70000, 8080), "invalid port"),
        (port(80, 70000), "invalid port"),
        (port(80, 8080, protocol="sctp"), "invalid protocol"),
        (port(80, 8080, mode="bridge"), "invalid publish mode"),
    ],
)
def test_bad_ports_are_invalid(control: Control, bad: objects.PortConfig, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        control.create("web", ports=[bad])
    assert control.stored() == {}


# ---- networks ---------------------------------------------------------------------------


def make_network(control: Control, name: str) -> objects.Network:
    return control.networks.create_network(objects.NetworkSpec(name=name))


def test_a_network_given_by_name_is_stored_by_id(control: Control) -> None:
    back = make_network(control, "back")
    front = make_network(control, "front")
    service = control.create("api", networks=[("back", ["db"]), (front.meta.id[:8], [])])
    assert [(a.target, list(a.aliases)) for a in service.spec.task.networks] == [
        (back.meta.id, ["db"]),
        (front.meta.id, []),
    ]
    # and the network is now in use by it
    with pytest.raises(Conflict, match="in use by service api"):
        control.networks.remove_network("back")


def test_an_update_naming_networks_by_name_stores_ids(control: Control) -> None:
    back = make_network(control, "back")
    control.create("api")

    def join(spec: objects.ServiceSpec) -> None:
        spec.task.networks.add(target="back", aliases=["db"])

    updated = control.update("api", join)
    assert [a.target for a in updated.spec.task.networks] == [back.meta.id]


@pytest.mark.parametrize(
    ("networks", "message"),
    [
        ([("nope", [])], "network nope not found"),
        ([(INGRESS_NAME, [])], "cannot be explicitly attached to the ingress network"),
        ([("back", ["-bad"])], "invalid alias"),
        ([("back", ["has space"])], "invalid alias"),
        ([("back", ["x" * 64])], "invalid alias"),
        ([("back", [""])], "invalid alias"),
        ([("back", []), ("back", [])], "attached more than once"),
    ],
)
def test_bad_networks_are_invalid_and_nothing_is_stored(
    control: Control, networks: list[tuple[str, list[str]]], message: str
) -> None:
    make_network(control, "back")
    with pytest.raises(InvalidArgument, match=message):
        control.create("api", networks=networks, ports=[port(80, 8080)])
    assert control.stored() == {}
    control.create("free", ports=[port(80, 8080)])  # the refused one held no port
    control.networks.remove_network("back")  # nor the network


def test_the_ingress_network_by_id_is_refused_too(control: Control) -> None:
    ingress = control.networks.get_network(INGRESS_NAME)
    with pytest.raises(InvalidArgument, match="ingress"):
        control.create("api", networks=[(ingress.meta.id, [])])


def test_a_refused_update_leaves_the_service_as_it_was(control: Control) -> None:
    make_network(control, "back")
    before = control.create("api", networks=[("back", ["db"])], ports=[port(80)])

    def break_it(spec: objects.ServiceSpec) -> None:
        spec.task.networks.add(target="ghost")

    with pytest.raises(InvalidArgument, match="network ghost not found"):
        control.update("api", break_it)
    assert control.services.get_service("api") == before

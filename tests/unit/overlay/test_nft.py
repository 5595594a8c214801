"""Published ports: validation, host-port resolution and the planned nft ruleset."""

from __future__ import annotations

import itertools
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

from api import engine_pb2, errors
from overlay.nft import (
    PortSpec,
    Probe,
    Proto,
    Publication,
    parse_ports,
    plan_ruleset,
    resolve_ports,
)

pytestmark = pytest.mark.unit

A = "a" * 64
B = "b" * 64


def spec(host_port: int, container_port: int = 80, *, ip: str = "", proto: str = "tcp") -> PortSpec:
    return PortSpec(
        host_ip=ip, host_port=host_port, container_port=container_port, protocol=Proto(proto)
    )


def binding(**fields: Any) -> engine_pb2.PortBinding:
    return engine_pb2.PortBinding(**fields)


# -- validation -------------------------------------------------------------------------


def test_defaults_are_tcp_on_all_addresses() -> None:
    parsed = parse_ports(
        [
            binding(host_port=8080, container_port=80),
            binding(host_ip="0.0.0.0", host_port=0, container_port=53, protocol="UDP"),
            binding(host_ip="127.0.0.1", host_port=9000, container_port=9000, protocol="tcp"),
        ]
    )
    assert parsed == (spec(8080), spec(0, 53, proto="udp"), spec(9000, 9000, ip="127.0.0.1"))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"container_port": 80, "protocol": "sctp"}, "Invalid proto: sctp"),
        ({"container_port": 0}, "Invalid containerPort: 0"),
        ({"container_port": 70000}, "Invalid containerPort: 70000"),
        ({"host_port": 70000, "container_port": 80}, 'Invalid port specification: "70000:80"'),
        ({"host_ip": "localhost", "container_port": 80}, "Invalid ip address: localhost"),
        ({"host_ip": "::1", "container_port": 80}, "IPv6 host addresses are not supported: ::1"),
    ],
)
def test_bad_bindings_are_invalid(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(errors.InvalidArgument) as raised:
        parse_ports([binding(**fields)])
    assert raised.value.message == message


def test_binding_round_trips_through_the_api_message() -> None:
    port = spec(8080, 80, ip="127.0.0.1", proto="udp")
    assert parse_ports([port.to_binding()]) == (port,)
    assert PortSpec.from_json(port.to_json()) == port
    assert str(port) == "127.0.0.1:8080->80/udp"


# -- host ports ---------------------------------------------------------------------------


def free_host(*ports: int) -> Probe:
    """A probe for a host where nothing is bound and the kernel hands out `ports`."""
    handed_out = iter(ports)

    def probe(port: PortSpec) -> int:
        return port.host_port or next(handed_out)

    return probe


def test_fixed_ports_are_kept_and_probed() -> None:
    probed: list[PortSpec] = []

    def probe(port: PortSpec) -> int:
        probed.append(port)
        return port.host_port

    assert resolve_ports([spec(8080)], published=[], probe=probe) == (spec(8080),)
    assert probed == [spec(8080)]


@pytest.mark.parametrize(
    ("published", "requested", "address"),
    [
        (spec(8080), spec(8080), "0.0.0.0"),
        (spec(8080, ip="127.0.0.1"), spec(8080), "0.0.0.0"),
        (spec(8080), spec(8080, ip="127.0.0.1"), "127.0.0.1"),
        (spec(8080, ip="127.0.0.1"), spec(8080, ip="127.0.0.1"), "127.0.0.1"),
    ],
)
def test_port_published_already_is_a_conflict(
    published: PortSpec, requested: PortSpec, address: str
) -> None:
    with pytest.raises(errors.Conflict) as raised:
        resolve_ports([requested], published=[published], probe=free_host())
    assert raised.value.message == f"Bind for {address}:8080 failed: port is already allocated"


@pytest.mark.parametrize(
    "other",
    [spec(8080, proto="udp"), spec(8081), spec(8080, ip="10.0.0.1")],
)
def test_other_protocol_port_or_address_is_no_conflict(other: PortSpec) -> None:
    requested = spec(8080, ip="127.0.0.1")
    assert resolve_ports([requested], published=[other], probe=free_host()) == (requested,)


def test_same_port_twice_in_one_request_is_a_conflict() -> None:
    with pytest.raises(errors.Conflict):
        resolve_ports([spec(8080, 80), spec(8080, 81)], published=[], probe=free_host())


def test_port_zero_takes_the_kernels_choice_skipping_ours() -> None:
    resolved = resolve_ports(
        [spec(0, 80), spec(0, 81)],
        published=[spec(40000)],
        probe=free_host(40000, 40001, 40001, 40002),
    )
    assert resolved == (spec(40001, 80), spec(40002, 81))


def test_port_zero_gives_up_after_bounded_attempts() -> None:
    with pytest.raises(errors.Unavailable):
        resolve_ports(
            [spec(0)], published=[spec(40000)], probe=free_host(*itertools.repeat(40000, 100))
        )


def test_probe_refusal_propagates() -> None:
    def held(port: PortSpec) -> int:
        raise errors.Conflict("Bind for 0.0.0.0:22 failed: port is already allocated")

    with pytest.raises(errors.Conflict):
        resolve_ports([spec(22)], published=[], probe=held)


# -- the ruleset --------------------------------------------------------------------------

SUBNET = IPv4Network("172.30.0.0/16")

EXPECTED = """\
table ip pyswarm
delete table ip pyswarm
table ip pyswarm {
\tchain prerouting {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tfib daddr type local jump published
\t}
\tchain output {
\t\ttype nat hook output priority -100; policy accept;
\t\tfib daddr type local jump published
\t}
\tchain published {
\t\ttcp dport 8080 dnat to 172.30.0.2:80 comment "A"
\t\tip daddr 127.0.0.1 udp dport 5353 dnat to 172.30.0.2:53 comment "A"
\t\ttcp dport 9000 dnat to 172.30.0.3:9000 comment "B"
\t}
\tchain postrouting {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tip saddr 172.30.0.0/16 oifname != "pyswarm0" masquerade
\t\toifname "pyswarm0" fib saddr type local masquerade
\t\toifname "pyswarm0" ip saddr 172.30.0.0/16 ct status dnat masquerade
\t}
}
""".replace('"A"', f'"{A}"').replace('"B"', f'"{B}"')


def publications() -> list[Publication]:
    a_ip, b_ip = IPv4Address("172.30.0.2"), IPv4Address("172.30.0.3")
    return [
        Publication(B, b_ip, spec(9000, 9000)),
        Publication(A, a_ip, spec(5353, 53, ip="127.0.0.1", proto="udp")),
        Publication(A, a_ip, spec(8080, 80)),
    ]


def test_ruleset_replaces_the_whole_table_in_one_script() -> None:
    script = plan_ruleset(
        table="pyswarm", bridge="pyswarm0", subnet=SUBNET, in_use=True, publications=publications()
    )
    assert script == EXPECTED


def test_ruleset_is_the_same_whatever_the_order_of_the_state() -> None:
    def plan(items: list[Publication]) -> str:
        return plan_ruleset(
            table="pyswarm", bridge="pyswarm0", subnet=SUBNET, in_use=True, publications=items
        )

    assert plan(publications()) == plan(list(reversed(publications())))


def test_ruleset_without_publications_still_masquerades_the_bridge() -> None:
    script = plan_ruleset(
        table="pyswarm", bridge="pyswarm0", subnet=SUBNET, in_use=True, publications=[]
    )
    assert "\tchain published {\n\t}\n" in script
    assert 'ip saddr 172.30.0.0/16 oifname != "pyswarm0" masquerade' in script


def test_unused_bridge_deletes_the_table() -> None:
    script = plan_ruleset(
        table="pyswarm", bridge="pyswarm0", subnet=SUBNET, in_use=False, publications=[]
    )
    assert script == "table ip pyswarm\ndelete table ip pyswarm\n"

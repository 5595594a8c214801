"""VIP and ingress nft scripts: shape, determinism, empty states and validation."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from api import errors
from overlay.lb import (
    IngressPort,
    Vip,
    plan_ingress_host,
    plan_ingress_sandbox,
    plan_vips,
    validate_published,
)

pytestmark = pytest.mark.unit


def ips(*last: int) -> tuple[IPv4Address, ...]:
    return tuple(IPv4Address(f"10.0.0.{n}") for n in last)


VIP_A = IPv4Address("10.0.0.100")
VIP_B = IPv4Address("10.0.0.101")
SANDBOX = IPv4Address("169.254.230.2")


def delete_only(table: str) -> str:
    return f"table ip {table}\ndelete table ip {table}\n"


# -- VIPs ---------------------------------------------------------------------------


def test_vip_script_shape() -> None:
    script = plan_vips([Vip(VIP_A, ips(5, 6, 7))])
    assert script == (
        "table ip pyswarm-lb\n"
        "delete table ip pyswarm-lb\n"
        "table ip pyswarm-lb {\n"
        "\tchain output {\n"
        "\t\ttype nat hook output priority -100; policy accept;\n"
        "\t\tip daddr 10.0.0.100 dnat to numgen inc mod 3 map"
        " { 0 : 10.0.0.5, 1 : 10.0.0.6, 2 : 10.0.0.7 }\n"
        "\t}\n"
        "}\n"
    )
    assert "masquerade" not in script and "snat" not in script  # client IP preserved


def test_vip_backends_sorted_and_deduplicated() -> None:
    assert plan_vips([Vip(VIP_A, ips(7, 5, 6, 5))]) == plan_vips([Vip(VIP_A, ips(5, 6, 7))])
    # Sorted as addresses, not as text.
    script = plan_vips([Vip(VIP_A, (IPv4Address("10.0.0.10"), IPv4Address("10.0.0.9")))])
    assert "{ 0 : 10.0.0.9, 1 : 10.0.0.10 }" in script


def test_vip_script_is_deterministic_whatever_the_order() -> None:
    a = Vip(VIP_A, ips(5))
    b = Vip(VIP_B, ips(6, 7))
    assert plan_vips([a, b]) == plan_vips([b, a]) == plan_vips([b, a])
    script = plan_vips([b, a])
    assert script.index("10.0.0.100") < script.index("10.0.0.101")


def test_vip_without_backends_is_refused_in_a_filter_chain() -> None:
    script = plan_vips([Vip(VIP_A, ips(5)), Vip(VIP_B, ())])
    output, refuse = script.split("\tchain refuse {\n")
    assert "10.0.0.101" not in output  # never DNAT'ed
    assert "type filter hook output" in refuse
    assert "ip daddr 10.0.0.101 meta l4proto tcp reject with tcp reset" in refuse
    assert "ip daddr 10.0.0.101 reject\n" in refuse
    assert "10.0.0.100" not in refuse
    # Several empty VIPs share one set.
    both = plan_vips([Vip(VIP_A, ()), Vip(VIP_B, ())])
    assert "ip daddr { 10.0.0.100, 10.0.0.101 } reject\n" in both
    assert "dnat" not in both


def test_no_vips_only_deletes_the_table() -> None:
    assert plan_vips([]) == delete_only("pyswarm-lb")
    assert plan_vips([], table="t") == delete_only("t")


def test_duplicate_vip_is_refused() -> None:
    with pytest.raises(errors.InvalidArgument, match=r"10\.0\.0\.100"):
        plan_vips([Vip(VIP_A, ips(5)), Vip(VIP_A, ips(6))])


def test_no_refuse_chain_when_every_vip_has_backends() -> None:
    assert "refuse" not in plan_vips([Vip(VIP_A, ips(5)), Vip(VIP_B, ips(6))])


# -- ingress ------------------------------------------------------------------------

WEB = IngressPort("tcp", 8080, 80, ips(5, 6))
DNS = IngressPort("udp", 53, 5353, ips(7))


def test_ingress_host_script_shape() -> None:
    script = plan_ingress_host([WEB, DNS], to=SANDBOX, ifname="veth-ing")
    assert script == (
        "table ip pyswarm-ingress\n"
        "delete table ip pyswarm-ingress\n"
        "table ip pyswarm-ingress {\n"
        "\tchain prerouting {\n"
        "\t\ttype nat hook prerouting priority dstnat; policy accept;\n"
        "\t\tfib daddr type local jump published\n"
        "\t}\n"
        "\tchain output {\n"
        "\t\ttype nat hook output priority -100; policy accept;\n"
        "\t\tfib daddr type local jump published\n"
        "\t}\n"
        "\tchain published {\n"
        "\t\ttcp dport 8080 dnat to 169.254.230.2\n"
        "\t\tudp dport 53 dnat to 169.254.230.2\n"
        "\t}\n"
        "\tchain postrouting {\n"
        "\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
        '\t\toifname "veth-ing" ip saddr 127.0.0.0/8 masquerade\n'
        "\t}\n"
        "}\n"
    )


def test_ingress_host_forwards_ports_without_backends_too() -> None:
    # The sandbox refuses them; the host only hands them over.
    script = plan_ingress_host([IngressPort("tcp", 81, 80, ())], to=SANDBOX, ifname="v")
    assert "tcp dport 81 dnat to 169.254.230.2" in script


def test_ingress_sandbox_script_shape() -> None:
    script = plan_ingress_sandbox([WEB, DNS, IngressPort("tcp", 9000, 90, ())], bridge="br7")
    assert script == (
        "table ip pyswarm-ingress\n"
        "delete table ip pyswarm-ingress\n"
        "table ip pyswarm-ingress {\n"
        "\tchain prerouting {\n"
        "\t\ttype nat hook prerouting priority dstnat; policy accept;\n"
        "\t\tfib daddr type local tcp dport 8080 dnat to numgen inc mod 2 map"
        " { 0 : 10.0.0.5, 1 : 10.0.0.6 } : 80\n"
        "\t\tfib daddr type local udp dport 53 dnat to numgen inc mod 1 map"
        " { 0 : 10.0.0.7 } : 5353\n"
        "\t}\n"
        "\tchain postrouting {\n"
        "\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
        '\t\toifname "br7" ct status dnat masquerade\n'
        "\t}\n"
        "\tchain refuse {\n"
        "\t\ttype filter hook input priority filter; policy accept;\n"
        "\t\ttcp dport 9000 reject with tcp reset\n"
        "\t}\n"
        "}\n"
    )


def test_ingress_sandbox_refuses_empty_udp_with_icmp() -> None:
    script = plan_ingress_sandbox([IngressPort("udp", 53, 53, ())])
    assert "\t\tudp dport 53 reject\n" in script
    assert "dnat to" not in script


def test_ingress_is_deterministic() -> None:
    shuffled = IngressPort("tcp", 8080, 80, ips(6, 5, 6))
    assert plan_ingress_sandbox([WEB, DNS]) == plan_ingress_sandbox([DNS, shuffled])
    assert plan_ingress_host([WEB, DNS], to=SANDBOX, ifname="v") == plan_ingress_host(
        [DNS, WEB], to=SANDBOX, ifname="v"
    )


def test_no_ingress_ports_only_deletes_the_table() -> None:
    assert plan_ingress_host([], to=SANDBOX, ifname="v") == delete_only("pyswarm-ingress")
    assert plan_ingress_sandbox([]) == delete_only("pyswarm-ingress")
    assert plan_ingress_sandbox([], table="x") == delete_only("x")


# -- validation ---------------------------------------------------------------------


@pytest.mark.parametrize("port", [0, -1, 65536, 100000])
def test_validate_published_refuses_out_of_range(port: int) -> None:
    with pytest.raises(errors.InvalidArgument) as info:
        validate_published(port)
    assert info.value.message == f"invalid published port {port}: must be 1-65535"


@pytest.mark.parametrize("port", [1, 80, 65535])
def test_validate_published_accepts(port: int) -> None:
    validate_published(port)


@pytest.mark.parametrize(
    ("port", "message"),
    [
        (IngressPort("tcp", 0, 80, ()), "invalid published port 0: must be 1-65535"),
        (IngressPort("tcp", 80, 70000, ()), "invalid target port 70000: must be 1-65535"),
        (IngressPort("sctp", 80, 80, ()), "invalid protocol 'sctp'"),
        (IngressPort("TCP", 80, 80, ()), "invalid protocol 'TCP'"),
    ],
)
def test_ingress_renderers_refuse_bad_ports(port: IngressPort, message: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=message):
        plan_ingress_sandbox([port])
    with pytest.raises(errors.InvalidArgument, match=message):
        plan_ingress_host([port], to=SANDBOX, ifname="v")


def test_same_port_published_twice_is_refused() -> None:
    again = IngressPort("tcp", 8080, 81, ips(9))
    with pytest.raises(errors.InvalidArgument, match="8080/tcp is published more than once"):
        plan_ingress_sandbox([WEB, again])
    # The same number over another protocol is fine.
    plan_ingress_sandbox([WEB, IngressPort("udp", 8080, 80, ips(9))])

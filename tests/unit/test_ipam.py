"""IPAM: which addresses are handed out, in what order, and when it runs dry."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface

import pytest

from api import errors
from api.ipam import Ipam, parse_subnet

pytestmark = pytest.mark.unit


def ips(*last_octets: int) -> list[IPv4Address]:
    return [IPv4Address(f"10.9.0.{n}") for n in last_octets]


def test_gateway_is_the_first_address_and_never_handed_out() -> None:
    ipam = Ipam("10.9.0.0/29", network_name="pyswarm0")

    assert ipam.gateway == IPv4Address("10.9.0.1")
    assert ipam.gateway_interface == IPv4Interface("10.9.0.1/29")
    assert [ipam.allocate() for _ in range(5)] == ips(2, 3, 4, 5, 6)  # not .0, .1, .7


def test_exhaustion_is_unavailable_in_dockers_words() -> None:
    ipam = Ipam("10.9.0.0/30", network_name="pyswarm0")
    assert ipam.allocate() == IPv4Address("10.9.0.2")

    with pytest.raises(errors.Unavailable) as raised:
        ipam.allocate()
    assert raised.value.message == "no available IPv4 addresses on network pyswarm0"


def test_released_address_is_not_reused_at_once() -> None:
    ipam = Ipam("10.9.0.0/29", network_name="pyswarm0")
    first, second = ipam.allocate(), ipam.allocate()
    ipam.release(first)

    assert ipam.allocate() == IPv4Address("10.9.0.4")
    assert ipam.allocated == {second, IPv4Address("10.9.0.4")}


def test_allocation_wraps_around_to_free_addresses() -> None:
    ipam = Ipam("10.9.0.0/29", network_name="pyswarm0")
    got = [ipam.allocate() for _ in range(5)]
    ipam.release(got[1])

    assert ipam.allocate() == got[1]


def test_reserve_takes_known_addresses_and_refuses_bad_ones() -> None:
    ipam = Ipam("10.9.0.0/29", network_name="pyswarm0")
    ipam.reserve(IPv4Address("10.9.0.2"))

    assert ipam.allocate() == IPv4Address("10.9.0.3")
    for bad in ("10.9.0.2", "10.9.0.1", "10.9.0.7", "10.9.1.2"):
        with pytest.raises(ValueError):
            ipam.reserve(IPv4Address(bad))


def test_release_of_a_free_address_is_a_no_op() -> None:
    ipam = Ipam("10.9.0.0/29", network_name="pyswarm0")
    ipam.release(IPv4Address("10.9.0.5"))
    assert ipam.allocated == frozenset()


def test_interface_carries_the_subnet_prefix() -> None:
    ipam = Ipam("172.30.0.0/16", network_name="pyswarm0")
    assert ipam.interface(ipam.allocate()) == IPv4Interface("172.30.0.2/16")


@pytest.mark.parametrize(
    ("subnet", "message"),
    [
        ("10.9.0.0/31", "subnet 10.9.0.0/31 is too small: need a /30 or larger"),
        ("10.9.0.1/24", "invalid subnet '10.9.0.1/24': 10.9.0.1/24 has host bits set"),
        ("fd00::/64", "invalid subnet 'fd00::/64': Expected 4 octets in 'fd00::'"),
    ],
)
def test_bad_subnets_are_invalid(subnet: str, message: str) -> None:
    with pytest.raises(errors.InvalidArgument) as raised:
        parse_subnet(subnet)
    assert raised.value.message == message

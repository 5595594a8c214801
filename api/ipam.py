"""IPv4 address management for one subnet: pure bookkeeping, no kernel, no I/O.

The first usable address of the subnet is the gateway (it lives on the bridge); the
network and broadcast addresses are never handed out. Allocation walks forward from
the last address handed out and wraps around, like docker's allocator, so a released
address is not reused at once (a stale ARP entry for it may still be cached on peers).

    ipam = Ipam("172.30.0.0/16", network_name="pyswarm0")   # or gateway=..., ip_range=...
    ip = ipam.allocate()          # IPv4Address("172.30.0.2")
    ipam.release(ip)
    ipam.reserve(ip)              # at restore: addresses read back from saved state

Exhaustion raises `api.errors.Unavailable` in docker's words.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from api import errors


class Ipam:
    """Addresses in use in one subnet; not thread-safe (the driver holds its lock)."""

    def __init__(
        self, subnet: str, *, network_name: str, gateway: str = "", ip_range: str = ""
    ) -> None:
        self.network = parse_subnet(subnet)
        self.network_name = network_name
        self.gateway = (
            parse_gateway(gateway, self.network) if gateway else (self.network.network_address + 1)
        )
        pool = parse_ip_range(ip_range, self.network) if ip_range else self.network
        self._first = max(int(pool.network_address), int(self.network.network_address) + 1)
        self._last = min(int(pool.broadcast_address), int(self.network.broadcast_address) - 1)
        self._in_use: set[int] = {int(self.gateway)}
        self._cursor = self._first - 1

    @property
    def gateway_interface(self) -> IPv4Interface:
        """The gateway with the subnet's prefix length, as put on the bridge."""
        return IPv4Interface(f"{self.gateway}/{self.network.prefixlen}")

    @property
    def allocated(self) -> frozenset[IPv4Address]:
        return frozenset(IPv4Address(a) for a in self._in_use if a != int(self.gateway))

    def interface(self, address: IPv4Address) -> IPv4Interface:
        """`address` with the subnet's prefix length, as put on a container's eth0."""
        return IPv4Interface(f"{address}/{self.network.prefixlen}")

    def allocate(self) -> IPv4Address:
        """The next free address after the last one handed out, wrapping around."""
        size = self._last - self._first + 1
        for step in range(1, size + 1):
            candidate = self._first + (self._cursor - self._first + step) % size
            if candidate not in self._in_use:
                self._in_use.add(candidate)
                self._cursor = candidate
                return IPv4Address(candidate)
        raise errors.Unavailable(f"no available IPv4 addresses on network {self.network_name}")

    def reserve(self, address: IPv4Address) -> None:
        """Mark a known address as in use (state read back at start)."""
        value = int(address)
        if address not in self.network or value in (
            int(self.network.network_address),
            int(self.network.broadcast_address),
        ):
            raise ValueError(f"{address} is not an assignable address of {self.network}")
        if value in self._in_use:
            raise ValueError(f"{address} is already in use on {self.network_name}")
        self._in_use.add(value)

    def release(self, address: IPv4Address) -> None:
        """Return an address to the pool; releasing a free address is a no-op."""
        if int(address) != int(self.gateway):
            self._in_use.discard(int(address))


def parse_gateway(gateway: str, network: IPv4Network) -> IPv4Address:
    """A gateway that is an assignable address of `network`."""
    try:
        address = IPv4Address(gateway)
    except ValueError:
        raise errors.InvalidArgument(f"invalid gateway {gateway!r}") from None
    if address not in network or address in (network.network_address, network.broadcast_address):
        raise errors.InvalidArgument(f"gateway {gateway} is not a host address of {network}")
    return address


def parse_ip_range(ip_range: str, network: IPv4Network) -> IPv4Network:
    """An --ip-range inside the subnet."""
    try:
        pool = IPv4Network(ip_range, strict=True)
    except ValueError as exc:
        raise errors.InvalidArgument(f"invalid ip-range {ip_range!r}: {exc}") from None
    if not pool.subnet_of(network):
        raise errors.InvalidArgument(f"ip-range {ip_range} is not within the subnet {network}")
    return pool


def parse_subnet(subnet: str) -> IPv4Network:
    """A subnet with room for a gateway and at least one container (prefix <= 30)."""
    try:
        network = IPv4Network(subnet, strict=True)
    except ValueError as exc:
        raise errors.InvalidArgument(f"invalid subnet {subnet!r}: {exc}") from None
    if network.prefixlen > 30:
        raise errors.InvalidArgument(f"subnet {subnet} is too small: need a /30 or larger")
    return network

"""Published ports: validation, host-port choice, and the nftables ruleset behind them.

Three layers, each usable alone:

1. `parse_ports` turns the API's `PortBinding` messages into validated `PortSpec`s
   (pure; `InvalidArgument` in docker's words).
2. `resolve_ports` gives every spec a concrete host port and refuses one already
   published by the driver or held by a socket on this host (`Conflict`, docker's
   "port is already allocated"). The check against the host goes through an injected
   `probe` (the real one, `probe_host_port`, binds a socket), so the logic is pure.
3. `plan_ruleset` renders the whole `table ip pyswarm` from the driver's state (pure:
   same state, same text) and `apply_ruleset` loads it with `nft -f -`. The script
   declares, deletes and re-creates the table in one nft transaction, so the kernel
   switches from the old ruleset to the new one atomically and nothing outside our
   table is ever touched. With nothing attached, the script only deletes the table.

The ruleset (one DNAT rule per published port, commented with the container id):

    prerouting  (nat, dstnat)  fib daddr type local jump published   # from outside
    output      (nat, -100)    fib daddr type local jump published   # from this host
    published                  [ip daddr HOST_IP] tcp dport P dnat to CIP:CP
    postrouting (nat, srcnat)  subnet leaving by another interface -> masquerade
                               host-originated (e.g. 127.0.0.1) into the bridge -> masquerade
                               DNAT'ed traffic from a container back into the bridge
                               (hairpin) -> masquerade, so replies come back through us

Reaching a container through 127.0.0.1 also needs `route_localnet=1` on the bridge
(the kernel drops loopback sources on other interfaces otherwise); the link layer
(`overlay.netns`) sets it.
"""

from __future__ import annotations

import dataclasses
import errno
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network, ip_address

from api import engine_pb2, errors

NFT_TIMEOUT_SECONDS = 10
# Attempts at drawing a free port from the kernel that is not already ours.
FREE_PORT_ATTEMPTS = 32

# Base chains; `output` sits at dstnat's priority (-100) for locally originated traffic.
PREROUTING_HOOK = "type nat hook prerouting priority dstnat; policy accept;"
OUTPUT_HOOK = "type nat hook output priority -100; policy accept;"
POSTROUTING_HOOK = "type nat hook postrouting priority srcnat; policy accept;"


class Proto(StrEnum):
    TCP = "tcp"
    UDP = "udp"


@dataclass(frozen=True, order=True)
class PortSpec:
    """One published port; host_ip "" means all addresses, host_port 0 "pick one"."""

    host_ip: str
    host_port: int
    container_port: int
    protocol: Proto

    def __str__(self) -> str:
        return (
            f"{self.host_ip or '0.0.0.0'}:{self.host_port}->{self.container_port}/{self.protocol}"
        )

    @property
    def bind_address(self) -> str:
        return self.host_ip or "0.0.0.0"

    def overlaps(self, other: PortSpec) -> bool:
        """Whether both cannot be published at once (same port, address sets meet)."""
        return (
            self.protocol == other.protocol
            and self.host_port == other.host_port
            and (self.host_ip == other.host_ip or not self.host_ip or not other.host_ip)
        )

    def to_binding(self) -> engine_pb2.PortBinding:
        return engine_pb2.PortBinding(
            host_ip=self.host_ip,
            host_port=self.host_port,
            container_port=self.container_port,
            protocol=str(self.protocol),
        )

    def to_json(self) -> dict[str, object]:
        return {
            "host_ip": self.host_ip,
            "host_port": self.host_port,
            "container_port": self.container_port,
            "protocol": str(self.protocol),
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> PortSpec:
        return cls(
            host_ip=str(data["host_ip"]),
            host_port=int(str(data["host_port"])),
            container_port=int(str(data["container_port"])),
            protocol=Proto(str(data["protocol"])),
        )


def already_allocated(spec: PortSpec) -> errors.Conflict:
    return errors.Conflict(
        f"Bind for {spec.bind_address}:{spec.host_port} failed: port is already allocated"
    )


# -- 1. validation ------------------------------------------------------------------


def parse_ports(bindings: Sequence[engine_pb2.PortBinding]) -> tuple[PortSpec, ...]:
    """Validate the API's bindings; "" protocol is tcp, "0.0.0.0" is all addresses."""
    return tuple(parse_port(binding) for binding in bindings)


def parse_port(binding: engine_pb2.PortBinding) -> PortSpec:
    protocol = _parse_protocol(binding.protocol)
    if not 0 < binding.container_port <= 65535:
        raise errors.InvalidArgument(f"Invalid containerPort: {binding.container_port}")
    if binding.host_port > 65535:
        raise errors.InvalidArgument(
            f'Invalid port specification: "{binding.host_port}:{binding.container_port}"'
        )
    return PortSpec(
        host_ip=_parse_host_ip(binding.host_ip),
        host_port=binding.host_port,
        container_port=binding.container_port,
        protocol=protocol,
    )


def _parse_protocol(text: str) -> Proto:
    try:
        return Proto(text.lower() or "tcp")
    except ValueError:
        raise errors.InvalidArgument(f"Invalid proto: {text}") from None


def _parse_host_ip(text: str) -> str:
    if text in ("", "0.0.0.0"):
        return ""
    try:
        address = ip_address(text)
    except ValueError:
        raise errors.InvalidArgument(f"Invalid ip address: {text}") from None
    if not isinstance(address, IPv4Address):
        raise errors.InvalidArgument(f"IPv6 host addresses are not supported: {text}")
    return str(address)


# -- 2. host ports ------------------------------------------------------------------

Probe = Callable[[PortSpec], int]


def resolve_ports(
    requested: Sequence[PortSpec],
    *,
    published: Iterable[PortSpec],
    probe: Probe,
) -> tuple[PortSpec, ...]:
    """Concrete host ports for `requested`, none overlapping `published` or each other.

    `probe(spec)` checks the host (raising Conflict when the port is held) and returns
    the port it could bind, the kernel's choice when spec.host_port is 0."""
    taken = list(published)
    resolved: list[PortSpec] = []
    for spec in requested:
        if spec.host_port:
            if any(spec.overlaps(other) for other in taken):
                raise already_allocated(spec)
            probe(spec)
            chosen = spec
        else:
            chosen = _pick_free_port(spec, taken=taken, probe=probe)
        taken.append(chosen)
        resolved.append(chosen)
    return tuple(resolved)


def _pick_free_port(spec: PortSpec, *, taken: Sequence[PortSpec], probe: Probe) -> PortSpec:
    for _ in range(FREE_PORT_ATTEMPTS):
        candidate = dataclasses.replace(spec, host_port=probe(spec))
        if not any(candidate.overlaps(other) for other in taken):
            return candidate
    raise errors.Unavailable(f"no free host port for {spec.container_port}/{spec.protocol}")


def probe_host_port(spec: PortSpec) -> int:
    """Bind (and release) the host port in the current network namespace.

    TCP binds with SO_REUSEADDR so that only a live socket (a listener, a bound
    socket), not a connection in TIME_WAIT, counts as holding the port."""
    kind = socket.SOCK_STREAM if spec.protocol == Proto.TCP else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as sock:
        if spec.protocol == Proto.TCP:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((spec.bind_address, spec.host_port))
        except OSError as exc:
            raise _bind_error(spec, exc) from None
        port: int = sock.getsockname()[1]
        return port


def _bind_error(spec: PortSpec, exc: OSError) -> errors.PyswarmError:
    if exc.errno == errno.EADDRINUSE:
        return already_allocated(spec)
    where = f"{spec.bind_address}:{spec.host_port}"
    if exc.errno == errno.EADDRNOTAVAIL:
        return errors.InvalidArgument(f"Bind for {where} failed: cannot assign requested address")
    return errors.EngineFailure(f"Bind for {where} failed: {exc.strerror}")


# -- 3. ruleset ---------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Publication:
    """A published port of a container (host port resolved): one DNAT rule."""

    container_id: str
    container_ip: IPv4Address
    port: PortSpec


def plan_ruleset(
    *,
    table: str,
    bridge: str,
    subnet: IPv4Network,
    in_use: bool,
    publications: Iterable[Publication],
) -> str:
    """The nft script that makes `table ip <table>` exactly what the state asks for.

    `in_use`: some container is on the bridge (its traffic out needs masquerading);
    when False the table is only deleted."""
    head = [f"table ip {table}", f"delete table ip {table}"]
    if not in_use:
        return "\n".join(head) + "\n"
    to_published = ["fib daddr type local jump published"]
    lines = [
        *head,
        f"table ip {table} {{",
        *_chain("prerouting", hook=PREROUTING_HOOK, rules=to_published),
        *_chain("output", hook=OUTPUT_HOOK, rules=to_published),
        *_chain("published", hook=None, rules=[_dnat_rule(p) for p in sorted(publications)]),
        *_chain("postrouting", hook=POSTROUTING_HOOK, rules=_masquerade(bridge, subnet=subnet)),
        "}",
    ]
    return "\n".join(lines) + "\n"


def _chain(name: str, *, hook: str | None, rules: Sequence[str]) -> list[str]:
    body = ([hook] if hook else []) + list(rules)
    return [f"\tchain {name} {{", *(f"\t\t{line}" for line in body), "\t}"]


def _dnat_rule(publication: Publication) -> str:
    port = publication.port
    match_ip = f"ip daddr {port.host_ip} " if port.host_ip else ""
    target = f"{publication.container_ip}:{port.container_port}"
    return (
        f"{match_ip}{port.protocol} dport {port.host_port} dnat to {target}"
        f' comment "{publication.container_id}"'
    )


def _masquerade(bridge: str, *, subnet: IPv4Network) -> list[str]:
    return [
        f'ip saddr {subnet} oifname != "{bridge}" masquerade',
        f'oifname "{bridge}" fib saddr type local masquerade',
        f'oifname "{bridge}" ip saddr {subnet} ct status dnat masquerade',
    ]


def apply_ruleset(script: str, *, nft: str) -> None:
    """Load the script in one transaction; EngineFailure with nft's message if refused."""
    try:
        done = subprocess.run(
            [nft, "-f", "-"],
            input=script,
            capture_output=True,
            text=True,
            timeout=NFT_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise errors.EngineFailure(f"nft failed: {exc}") from None
    if done.returncode != 0:
        message = " ".join(done.stderr.split()) or f"exit status {done.returncode}"
        raise errors.EngineFailure(f"nft failed: {message}")


def find_nft() -> str:
    """The nft binary; /usr/sbin is often missing from a service's PATH."""
    return shutil.which("nft") or "/usr/sbin/nft"

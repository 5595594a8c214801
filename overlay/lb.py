"""Service VIP load balancing and the ingress routing mesh, in nftables.

No userspace proxy: the kernel's NAT picks a backend per connection (conntrack keeps
the choice for the rest of it), with `numgen inc mod N` over a map of the backends,
so connections go round-robin. Three rulesets, each rendered by a pure function from
the state it serves (same state, same text: backends are sorted and deduplicated) and
loaded by `apply` inside a named network namespace with
`nsenter --net=/run/netns/<ns> nft -f -` (a child process, never a fork of ours with
preexec_fn: the daemon runs gRPC threads).

Every script is whole-table and atomic, like overlay.nft's: it declares the table,
deletes it and declares it again in one nft transaction, so the kernel switches from
the old ruleset to the new one at once, a refused script changes nothing, and nothing
outside our table is touched. An empty state renders a script that only deletes the
table (which succeeds when there is no table).

1. `plan_vips`, in a *task container's* namespace. A connection the task opens to a
   VIP is DNAT'ed in its own output hook to one backend (all protocols, ports
   unchanged). The backend sees the task's own address and answers it directly: no
   SNAT, no hairpin, client IP preserved.

       output (nat, -100)        ip daddr VIP dnat to numgen inc mod N map {0 : B0, ...}
       refuse (filter, output)   ip daddr EMPTY_VIP reject (tcp reset / port-unreachable)

   A VIP with no backends is refused at once rather than left to time out (a nat chain
   cannot hold `reject`, hence the filter chain): TCP connects get a reset
   (ECONNREFUSED); other datagrams are rejected in the sender's own output hook, so its
   send() fails with EPERM. The VIP must be routable from the
   task (inside the overlay's subnet, or covered by its default route): the route is
   looked up before the output hook runs.

2. `plan_ingress_host`, in the node's own namespace. A published port on any local
   address is DNAT'ed, same port, to the ingress sandbox's address on the
   host<->sandbox veth; connections from the node itself to 127.0.0.1:P too, which then
   need masquerading (and `route_localnet=1` on the veth, set by the link layer).

       prerouting (nat, dstnat)   fib daddr type local jump published   # from outside
       output     (nat, -100)     fib daddr type local jump published   # from this node
       published                  tcp dport P dnat to SANDBOX
       postrouting (nat, srcnat)  oifname VETH ip saddr 127.0.0.0/8 masquerade

   No forward rule: a namespace without filter chains forwards (with ip_forward=1);
   a host whose own firewall drops forwarded traffic needs its own exception.

3. `plan_ingress_sandbox`, in the ingress network's namespace (the overlay bridge with
   this node's ingress address, a default route back to the host, ip_forward=1). A
   published port arriving there is DNAT'ed over the service's tasks to TASK:TARGET and
   masqueraded out the bridge, so the task's replies come back through this node (the
   task's own default route leads elsewhere).

       prerouting (nat, dstnat)   fib daddr type local tcp dport P
                                      dnat to numgen inc mod N map {0 : T0, ...} : TARGET
       postrouting (nat, srcnat)  oifname BRIDGE ct status dnat masquerade
       refuse (filter, input)     tcp dport EMPTY_P reject with tcp reset
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address

from api import errors
from overlay import nft
from overlay.netns import netns_path

VIP_TABLE = "pyswarm-lb"
INGRESS_TABLE = "pyswarm-ingress"
PROTOCOLS = ("tcp", "udp")
LOOPBACK = "127.0.0.0/8"

FILTER_OUTPUT_HOOK = "type filter hook output priority filter; policy accept;"
FILTER_INPUT_HOOK = "type filter hook input priority filter; policy accept;"


@dataclass(frozen=True)
class Vip:
    """A service's virtual IP and the addresses of its healthy running tasks."""

    address: IPv4Address
    backends: tuple[IPv4Address, ...]


@dataclass(frozen=True)
class IngressPort:
    """A port published through the routing mesh: `published` on every node, forwarded
    to `target` on one of the backends."""

    protocol: str
    published: int
    target: int
    backends: tuple[IPv4Address, ...]


# -- validation ---------------------------------------------------------------------


def validate_published(port: int) -> None:
    _validate_port(port, what="published")


def _validate_port(port: int, *, what: str) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= 65535:
        raise errors.InvalidArgument(f"invalid {what} port {port}: must be 1-65535")


def _validate_ingress(ports: Sequence[IngressPort]) -> list[IngressPort]:
    """The ports sorted by (protocol, published); refuses bad ports and duplicates."""
    seen: set[tuple[str, int]] = set()
    for port in ports:
        if port.protocol not in PROTOCOLS:
            raise errors.InvalidArgument(
                f"invalid protocol {port.protocol!r} for published port {port.published}: "
                "must be tcp or udp"
            )
        validate_published(port.published)
        _validate_port(port.target, what="target")
        key = (port.protocol, port.published)
        if key in seen:
            raise errors.InvalidArgument(
                f"port {port.published}/{port.protocol} is published more than once"
            )
        seen.add(key)
    return sorted(ports, key=lambda p: (p.protocol, p.published))


def _ordered(backends: Iterable[IPv4Address]) -> list[IPv4Address]:
    return sorted(set(backends))


# -- rendering ----------------------------------------------------------------------


def _delete_only(table: str) -> list[str]:
    return [f"table ip {table}", f"delete table ip {table}"]


def _script(table: str, chains: Sequence[list[str]]) -> str:
    lines = _delete_only(table)
    if chains:
        lines += [f"table ip {table} {{", *(line for chain in chains for line in chain), "}"]
    return "\n".join(lines) + "\n"


def _chain(name: str, *, hook: str | None, rules: Sequence[str]) -> list[str]:
    body = ([hook] if hook else []) + list(rules)
    return [f"\tchain {name} {{", *(f"\t\t{line}" for line in body), "\t}"]


def _numgen(backends: Sequence[IPv4Address]) -> str:
    """`numgen inc mod N map { 0 : B0, 1 : B1, ... }`: round-robin over the backends."""
    entries = ", ".join(f"{i} : {address}" for i, address in enumerate(backends))
    return f"numgen inc mod {len(backends)} map {{ {entries} }}"


def plan_vips(vips: Sequence[Vip], *, table: str = VIP_TABLE) -> str:
    """The script for a task's namespace: its connections to each VIP go to a backend."""
    by_address: dict[IPv4Address, list[IPv4Address]] = {}
    for vip in vips:
        if vip.address in by_address:
            raise errors.InvalidArgument(f"virtual IP {vip.address} is listed more than once")
        by_address[vip.address] = _ordered(vip.backends)
    if not by_address:
        return _script(table, [])
    dnat: list[str] = []
    empty: list[IPv4Address] = []
    for address in sorted(by_address):
        backends = by_address[address]
        if backends:
            dnat.append(f"ip daddr {address} dnat to {_numgen(backends)}")
        else:
            empty.append(address)
    chains = [_chain("output", hook=nft.OUTPUT_HOOK, rules=dnat)]
    if empty:
        chains.append(_chain("refuse", hook=FILTER_OUTPUT_HOOK, rules=_refuse_vips(empty)))
    return _script(table, chains)


def _refuse_vips(addresses: Sequence[IPv4Address]) -> list[str]:
    match = f"ip daddr {_set(str(a) for a in addresses)}"
    # `reject` alone answers with ICMP port-unreachable, which UDP and others take as
    # "connection refused"; TCP gets a reset.
    return [f"{match} meta l4proto tcp reject with tcp reset", f"{match} reject"]


def _set(items: Iterable[str]) -> str:
    values = list(items)
    return values[0] if len(values) == 1 else "{ " + ", ".join(values) + " }"


def plan_ingress_host(
    ports: Sequence[IngressPort],
    *,
    to: IPv4Address,
    ifname: str,
    table: str = INGRESS_TABLE,
) -> str:
    """The script for the node's namespace: published ports go to the ingress sandbox."""
    ordered = _validate_ingress(ports)
    if not ordered:
        return _script(table, [])
    to_published = ["fib daddr type local jump published"]
    published = [f"{p.protocol} dport {p.published} dnat to {to}" for p in ordered]
    chains = [
        _chain("prerouting", hook=nft.PREROUTING_HOOK, rules=to_published),
        _chain("output", hook=nft.OUTPUT_HOOK, rules=to_published),
        _chain("published", hook=None, rules=published),
        _chain(
            "postrouting",
            hook=nft.POSTROUTING_HOOK,
            rules=[f'oifname "{ifname}" ip saddr {LOOPBACK} masquerade'],
        ),
    ]
    return _script(table, chains)


def plan_ingress_sandbox(
    ports: Sequence[IngressPort],
    *,
    bridge: str = "br0",
    table: str = INGRESS_TABLE,
) -> str:
    """The script for the ingress sandbox: published ports go to the service's tasks."""
    ordered = _validate_ingress(ports)
    if not ordered:
        return _script(table, [])
    dnat: list[str] = []
    refuse: list[str] = []
    for port in ordered:
        backends = _ordered(port.backends)
        match = f"{port.protocol} dport {port.published}"
        if backends:
            dnat.append(f"fib daddr type local {match} dnat to {_numgen(backends)} : {port.target}")
        elif port.protocol == "tcp":
            refuse.append(f"{match} reject with tcp reset")
        else:
            refuse.append(f"{match} reject")
    chains = [
        _chain("prerouting", hook=nft.PREROUTING_HOOK, rules=dnat),
        _chain(
            "postrouting",
            hook=nft.POSTROUTING_HOOK,
            rules=[f'oifname "{bridge}" ct status dnat masquerade'],
        ),
    ]
    if refuse:
        chains.append(_chain("refuse", hook=FILTER_INPUT_HOOK, rules=refuse))
    return _script(table, chains)


# -- applying -----------------------------------------------------------------------


TUNNEL_TABLE = "pyswarm-vxlan"


def plan_untracked_tunnel(port: int, *, table: str = TUNNEL_TABLE) -> str:
    """For the node's namespace: VXLAN's outer UDP packets skip connection tracking
    (raw priority, both directions). Nothing NATs them, and tracking every datagram of
    every tunnelled stream costs throughput; the inner packets are tracked in the
    tasks' own namespaces where the VIPs need it."""
    _validate_port(port, what="tunnel")
    rule = f"udp dport {port} notrack"
    return _script(
        table,
        [
            _chain("prerouting", hook="type filter hook prerouting priority raw; policy accept;",
                   rules=[rule]),
            _chain("output", hook="type filter hook output priority raw; policy accept;",
                   rules=[rule]),
        ],
    )  # fmt: skip


def apply(script: str, *, netns: str | None) -> None:
    """Load `script` in one nft transaction, in `netns` (None: the current namespace).

    EngineFailure with nft's message if refused; the previous ruleset then stays."""
    command = [nft.find_nft(), "-f", "-"]
    if netns is not None:
        command = ["nsenter", f"--net={netns_path(netns)}", *command]
    try:
        done = subprocess.run(
            command,
            input=script,
            capture_output=True,
            text=True,
            timeout=nft.NFT_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise errors.EngineFailure(f"nft failed: {exc}") from None
    if done.returncode != 0:
        message = " ".join(done.stderr.split()) or f"exit status {done.returncode}"
        where = f" in {netns}" if netns is not None else ""
        raise errors.EngineFailure(f"nft failed{where}: {message}")


def delete_table(table: str, *, netns: str | None) -> None:
    """Remove `table ip <table>`; nothing to do when it is not there."""
    apply(_script(table, []), netns=netns)

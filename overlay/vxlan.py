"""The per-node kernel side of an overlay network: a namespace with a bridge and a VXLAN.

A thin applier over netlink (pyroute2; its asyncio API for the peer table), in the
style of `overlay.netns`: no state of its own, every function works by name,
removals are idempotent, kernel failures surface as `api.errors.EngineFailure` and
bad input as `InvalidArgument`. Everything is relative
to the calling thread's *current* network namespace, the node's "host" namespace (in
the lab each host is itself a namespace and the daemon runs inside it).

Per overlay network and node, as docker does it:

    host ns                         ns (/run/netns/<ns>)               container ns
    UDP :4789 socket  <---  vxlan0 (id=VNI) --+
    (bound in host ns)                        br0 (mtu, ingress addr) -- veth -- eth1
    <host_ifname> (ingress) <----- veth ----- <ns_ifname>  (default route, ingress only)

- `ensure_network` makes the namespace, `br0` and the VXLAN device. The VXLAN is
  created in the host namespace under a temporary unique name, so its UDP socket and
  its underlay routing stay there, then moved into the namespace, renamed `vxlan0`,
  enslaved to `br0` and brought up. It has learning off and proxy ARP on: the
  kernel answers ARP requests for remote endpoints from vxlan0's static neighbour
  table, and with no all-zeros FDB entry broadcasts never leave the node. Bridged
  frames in the namespace bypass netfilter (br_netfilter's bridge-nf-call-* are 0
  there, if it is loaded): nothing there filters bridged traffic, and it costs.
- `set_peers` programs exactly the given remote endpoints: for each, one permanent
  FDB entry on vxlan0 (its MAC -> the node's underlay address) and one permanent
  neighbour entry (its overlay IP -> MAC). It reads what is there (two dumps),
  adds what is missing, moves a peer that changed node in place and deletes the
  rest, over one netlink socket in one thread, the writes batched many to a
  datagram: 300 new peers take about 0.2-0.3 s, an unchanged table under 0.1 s.
- `attach`/`detach` plug a container in with a veth (`host_ifname` on br0, `ifname`
  in the container). No default route: the container's default route is its eth0.
- `connect_host`/`disconnect_host` give the ingress network a routed veth to the host
  namespace, for the routing mesh (DNAT on the host to a task's ingress address).
- `remove_network` deletes vxlan0 and br0 explicitly before the namespace: a vxlan
  device belongs, for its VNI and socket, to the namespace it was created in, and the
  kernel tears a dropped namespace down asynchronously, so only an explicit delete
  frees the VNI for an immediate re-create.

The namespace side runs in a short-lived thread that entered the namespace
(`netns.in_netns`), never in a forked child. MTU on the overlay is the underlay's
minus 50 (VXLAN over IPv4: 14 + 20 + 8 + 8 bytes); the caller passes it in, helped
by `underlay_mtu`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from typing import Any, TypeVar

from pyroute2 import AsyncIPRoute
from pyroute2.netlink import (
    NLM_F_ACK,
    NLM_F_APPEND,
    NLM_F_CREATE,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
)
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_DELNEIGH, RTM_NEWNEIGH, ndmsg

from api import errors
from overlay import netns
from overlay.netns import _find, _index, _iproute, _kernel_errors, in_netns, set_sysctl

T = TypeVar("T")
VXLAN_PORT = 4789
BRIDGE = "br0"
VXLAN = "vxlan0"
VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8
DEFAULT_MTU = 1500
MIN_MTU = 68
MAX_MTU = 65535
MAX_VNI = (1 << 24) - 1
BR_NETFILTER_SYSCTLS = (
    "bridge-nf-call-iptables",
    "bridge-nf-call-ip6tables",
    "bridge-nf-call-arptables",
)
_TEMP_PREFIX = "vxt"  # the VXLAN's name in the host namespace until it moves
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_NUD_PERMANENT = ndmsg.states["permanent"]
_NTF_SELF = ndmsg.flags["self"]


@dataclass(frozen=True, order=True)
class Peer:
    """A remote endpoint of the overlay: its address, its MAC, the node it lives on."""

    ip: IPv4Address
    mac: str
    vtep: IPv4Address


def mac_for(ip: IPv4Address) -> str:
    """docker's MAC for an overlay address: 02:42 then the address's four bytes."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ip.packed)


def underlay_mtu(local: IPv4Address) -> int:
    """MTU of the link holding `local` in the current namespace (1500 if none does)."""
    with _kernel_errors(f"looking up the link of {local}"), _iproute() as ipr:
        for addr in ipr.get_addr(family=socket.AF_INET):
            if addr.get_attr("IFA_LOCAL") == str(local):
                links = ipr.get_links(addr["index"])
                if links:
                    mtu: int = links[0].get_attr("IFLA_MTU")
                    return mtu
    return DEFAULT_MTU


# -- validation ---------------------------------------------------------------------


def _check_name(what: str, name: str) -> None:
    if not _IFNAME.fullmatch(name) or name in (".", ".."):
        raise errors.InvalidArgument(f"invalid {what} {name!r}")


def _check_ns(ns: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", ns) or ns in (".", ".."):
        raise errors.InvalidArgument(f"invalid network namespace name {ns!r}")


def _check_mtu(mtu: int) -> None:
    if not MIN_MTU <= mtu <= MAX_MTU:
        raise errors.InvalidArgument(f"invalid MTU {mtu} (want {MIN_MTU}..{MAX_MTU})")


def _check_mac(mac: str) -> str:
    norm = mac.lower()
    if not _MAC.fullmatch(norm) or int(norm[:2], 16) & 1:
        raise errors.InvalidArgument(f"invalid unicast MAC address {mac!r}")
    return norm


# -- the network --------------------------------------------------------------------


def ensure_network(
    ns: str,
    *,
    vni: int,
    local: IPv4Address,
    mtu: int,
    bridge_address: IPv4Interface | None = None,
) -> None:
    """Namespace `ns` with br0 and vxlan0 (VNI `vni`, underlay source `local`), up.

    Idempotent: on an existing complete network only the bridge address is
    reconciled (exactly `bridge_address`, or none; with one, br0 takes the MAC
    `mac_for` derives from it, as peers expect). Whatever a failing call made is
    removed again."""
    _check_ns(ns)
    if not 1 <= vni <= MAX_VNI:
        raise errors.InvalidArgument(f"invalid VXLAN id {vni} (want 1..{MAX_VNI})")
    _check_mtu(mtu)
    made_ns = False
    made_bridge = False
    made_vxlan = False
    try:
        if ns not in netns.list_netns():
            netns.create_netns(ns)
            made_ns = True
        have_bridge, have_vxlan = in_netns(ns, _has_bridge_and_vxlan)
        if not have_bridge:
            made_bridge = True
            with _kernel_errors(f"creating {BRIDGE} in {ns}"):
                in_netns(ns, lambda ipr: _add_bridge(ipr, mtu))
        if not have_vxlan:
            made_vxlan = True
            _add_vxlan(ns, vni=vni, local=local, mtu=mtu)
        with _kernel_errors(f"configuring {BRIDGE} in {ns}"):
            in_netns(ns, lambda ipr: _reconcile_bridge(ipr, bridge_address))
    except BaseException:
        with contextlib.suppress(errors.EngineFailure):
            if made_ns:
                remove_network(ns)
            else:
                _remove_links(ns, bridge=made_bridge, vxlan=made_vxlan)
        raise


def _has_bridge_and_vxlan(ipr: Any) -> tuple[bool, bool]:
    return _find(ipr, BRIDGE) is not None, _find(ipr, VXLAN) is not None


def _add_bridge(ipr: Any, mtu: int) -> None:
    # A fixed MAC, so the bridge's MAC does not change as ports come and go.
    ipr.link("add", ifname=BRIDGE, kind="bridge", address=netns._random_mac())
    index = _index(ipr, BRIDGE)
    ipr.link("set", index=index, mtu=mtu)
    ipr.link("set", index=index, state="up")


def _reconcile_bridge(ipr: Any, want: IPv4Interface | None) -> None:
    # Inside the namespace: forwarding (ingress traffic is routed through it), and
    # bridged frames skip netfilter (br_netfilter, if loaded, would run them through
    # the IPv4 hooks, which costs overlay throughput): no rule in this namespace
    # filters bridged traffic; the ingress DNAT and masquerade here see routed packets.
    set_sysctl("net/ipv4/ip_forward", "1")
    for family in BR_NETFILTER_SYSCTLS:
        if os.path.exists(f"/proc/sys/net/bridge/{family}"):
            set_sysctl(f"net/bridge/{family}", "0")
    index = _index(ipr, BRIDGE)
    have = {
        IPv4Interface(f"{a.get_attr('IFA_LOCAL') or a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
        for a in ipr.get_addr(index=index, family=socket.AF_INET)
    }
    for extra in have - ({want} if want else set()):
        ipr.addr("del", index=index, address=str(extra.ip), prefixlen=extra.network.prefixlen)
    if want is not None and want not in have:
        ipr.addr("add", index=index, address=str(want.ip), prefixlen=want.network.prefixlen)
    if want is not None:
        # Peers program this address at the MAC derived from it (as every endpoint's),
        # so the bridge must answer to that MAC, not its random one.
        ipr.link("set", index=index, address=mac_for(want.ip))


def _add_vxlan(ns: str, *, vni: int, local: IPv4Address, mtu: int) -> None:
    temp = _TEMP_PREFIX + secrets.token_hex(6)
    moved = False
    try:
        with _kernel_errors(f"creating the VXLAN device for VNI {vni}"), _iproute() as ipr:
            ipr.link(
                "add",
                ifname=temp,
                kind="vxlan",
                vxlan_id=vni,
                vxlan_local=str(local),
                vxlan_port=VXLAN_PORT,
                vxlan_learning=0,
                vxlan_proxy=1,
                vxlan_udp_csum=0,  # as docker: the inner TCP/UDP checksums cover it
            )
            ipr.link("set", index=_index(ipr, temp), net_ns_fd=ns)
            moved = True

        def configure(ipr: Any) -> None:
            index = _index(ipr, temp)
            ipr.link("set", index=index, ifname=VXLAN)
            ipr.link("set", index=index, mtu=mtu, master=_index(ipr, BRIDGE))
            ipr.link("set", index=index, state="up")

        with _kernel_errors(f"configuring {VXLAN} in {ns}"):
            in_netns(ns, configure)
    except BaseException:
        with contextlib.suppress(errors.EngineFailure):
            if moved:
                with _kernel_errors(f"removing {temp} from {ns}"):
                    in_netns(ns, lambda ipr: netns.delete_with(ipr, temp))
            else:
                netns.delete_link(temp)
        raise


def _remove_links(ns: str, *, bridge: bool, vxlan: bool) -> None:
    def remove(ipr: Any) -> None:
        if vxlan:
            netns.delete_with(ipr, VXLAN)
        if bridge:
            netns.delete_with(ipr, BRIDGE)

    with _kernel_errors(f"removing links in {ns}"):
        in_netns(ns, remove)


def remove_network(ns: str) -> None:
    """Delete vxlan0 and br0 (freeing the VNI at once), then the namespace; idempotent."""
    _check_ns(ns)
    if ns not in netns.list_netns():
        return
    _remove_links(ns, bridge=True, vxlan=True)
    netns.remove_netns(ns)


# -- peers --------------------------------------------------------------------------
#
# The peer table goes over pyroute2's asyncio API on one socket per call, opened in a
# thread that entered the namespace (as `in_netns` does for the sync API). The sync
# `IPRoute` runs its event loop once per dumped message: dumping 300 entries took
# 80 ms there and takes about 25 here. Reads are pyroute2 dumps filtered to vxlan0;
# writes are the diff only, sent with `nlm_request_batch`, many requests to a
# datagram, each acknowledged: a peer is two requests, which cost 0.8-1 ms each sent
# one at a time through pyroute2 here, about 0.35 ms batched.

_NUD_NOARP = ndmsg.states["noarp"]
_FDB_STATE = _NUD_PERMANENT | _NUD_NOARP
_BATCH = 128  # requests per datagram: their acks stay well inside the receive buffer
_ZERO_MAC = "00:00:00:00:00:00"


@dataclass(frozen=True)
class _Change:
    """One request of a diff, and what it does (for errors)."""

    msg: Any  # a pyroute2 ndmsg, header type and flags set
    what: str
    delete: bool = False


def _request(
    kind: int,
    nlm_flags: int,
    *,
    family: int,
    index: int,
    state: int = 0,
    flags: int = 0,
    **attrs: str,
) -> Any:
    """A neighbour-table request: fields and NLAs (by pyroute2 name) set explicitly, so
    no helper defaults apply (pyroute2's `fdb("replace")` leaves out NTF_SELF, and the
    kernel then writes to the bridge's table instead of vxlan0's)."""
    msg = ndmsg.ndmsg()
    msg["family"] = family
    msg["ifindex"] = index
    msg["state"] = state
    msg["flags"] = flags
    msg["attrs"] = [(ndmsg.ndmsg.name2nla(name), value) for name, value in attrs.items()]
    msg["header"]["type"] = kind
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | nlm_flags
    return msg


def _fdb(kind: int, nlm_flags: int, index: int, mac: str, vtep: IPv4Address | None) -> Any:
    """vxlan0's own (NTF_SELF) permanent entry for `mac`; without `vtep`, all of its
    destinations (a delete naming one destination removes only that one)."""
    attrs = {"lladdr": mac} if vtep is None else {"lladdr": mac, "dst": str(vtep)}
    return _request(
        kind,
        nlm_flags,
        family=socket.AF_BRIDGE,
        index=index,
        state=_FDB_STATE,
        flags=_NTF_SELF,
        **attrs,
    )


def _ipv4(value: object) -> IPv4Address | None:
    if not isinstance(value, str):
        return None
    try:
        return IPv4Address(value)
    except ValueError:
        return None


async def _fdb_entries(ipr: Any, index: int) -> dict[str, set[IPv4Address]]:
    """vxlan0's own remote entries (NTF_SELF with a destination): MAC -> vteps."""
    out: dict[str, set[IPv4Address]] = {}
    async for entry in await ipr.neigh("dump", family=socket.AF_BRIDGE, ifindex=index):
        if not entry["flags"] & _NTF_SELF:  # the bridge's entries for the port
            continue
        mac = entry.get_attr("NDA_LLADDR")
        vtep = _ipv4(entry.get_attr("NDA_DST"))
        if mac and mac != _ZERO_MAC and vtep is not None:
            out.setdefault(mac, set()).add(vtep)
    return out


async def _neigh_entries(ipr: Any, index: int) -> dict[IPv4Address, str]:
    """vxlan0's permanent IPv4 neighbour entries, as address -> MAC."""
    out = {}
    async for entry in await ipr.neigh("dump", family=socket.AF_INET, ifindex=index):
        ip = _ipv4(entry.get_attr("NDA_DST"))
        mac = entry.get_attr("NDA_LLADDR")
        if entry["state"] & _NUD_PERMANENT and ip is not None and mac:
            out[ip] = mac
    return out


def _diff(
    index: int,
    have_fdb: dict[str, set[IPv4Address]],
    have_neigh: dict[IPv4Address, str],
    want_fdb: dict[str, IPv4Address],
    want_neigh: dict[IPv4Address, str],
) -> list[_Change]:
    """The requests that turn the `have` tables into the `want` ones: writes first,
    then deletes."""
    out: list[_Change] = []
    for mac, vtep in want_fdb.items():
        have = have_fdb.get(mac, set())
        if have == {vtep}:
            continue
        what = f"FDB entry {mac} -> {vtep}"
        if len(have) == 1:  # moved to another node: swap the destination in place
            msg = _fdb(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, index, mac, vtep)
            out.append(_Change(msg, what))
            continue
        if have:  # several destinations (not made here): start over
            msg = _fdb(RTM_DELNEIGH, 0, index, mac, None)
            out.append(_Change(msg, f"FDB entry {mac}", delete=True))
        out.append(_Change(_fdb(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_APPEND, index, mac, vtep), what))
    for ip, mac in want_neigh.items():
        if have_neigh.get(ip) != mac:
            msg = _request(
                RTM_NEWNEIGH,
                NLM_F_CREATE | NLM_F_REPLACE,
                family=socket.AF_INET,
                index=index,
                state=_NUD_PERMANENT,
                dst=str(ip),
                lladdr=mac,
            )
            out.append(_Change(msg, f"neighbour entry {ip} -> {mac}"))
    for mac in have_fdb.keys() - want_fdb.keys():
        msg = _fdb(RTM_DELNEIGH, 0, index, mac, None)
        out.append(_Change(msg, f"FDB entry {mac}", delete=True))
    for ip in have_neigh.keys() - want_neigh.keys():
        msg = _request(RTM_DELNEIGH, 0, family=socket.AF_INET, index=index, dst=str(ip))
        out.append(_Change(msg, f"neighbour entry {ip}", delete=True))
    return out


async def _send(ipr: Any, msgs: list[Any]) -> None:
    """Send the requests, `_BATCH` to a datagram, and wait for their acks. Raises the
    first failure (NetlinkError); the kernel still handles the rest of that datagram,
    the later datagrams are not sent."""
    for start in range(0, len(msgs), _BATCH):
        async for _ in ipr.nlm_request_batch(msgs[start : start + _BATCH]):
            pass


def _on_vxlan(ns: str, fn: Callable[[Any, int], Awaitable[T]]) -> T:
    """fn(socket, vxlan0's index), with an `AsyncIPRoute` in a thread inside `ns`."""

    async def main() -> T:
        async with AsyncIPRoute(groups=0) as ipr:
            links = await ipr.link("get", ifname=VXLAN)
            return await fn(ipr, links[0]["index"])

    def run() -> T:
        netns._enter(ns)
        return asyncio.run(main())

    return netns._in_thread(run)


def plan_peers(
    peers: Iterable[Peer],
) -> tuple[dict[str, IPv4Address], dict[IPv4Address, str]]:
    """The wanted FDB (MAC -> vtep) and neighbour (address -> MAC) tables; rejects a
    MAC on two nodes or an address with two MACs."""
    want_fdb: dict[str, IPv4Address] = {}
    want_neigh: dict[IPv4Address, str] = {}
    for peer in peers:
        mac = _check_mac(peer.mac)
        if want_fdb.setdefault(mac, peer.vtep) != peer.vtep:
            raise errors.InvalidArgument(f"MAC {mac} given on two nodes")
        if want_neigh.setdefault(peer.ip, mac) != mac:
            raise errors.InvalidArgument(f"address {peer.ip} given with two MACs")
    return want_fdb, want_neigh


def set_peers(ns: str, peers: Iterable[Peer]) -> None:
    """Make vxlan0's static FDB and neighbour entries exactly `peers`.

    Reads both tables (two dumps), then sends only the difference: missing entries
    added, a peer that moved to another node replaced in place, the rest deleted."""
    _check_ns(ns)
    want_fdb, want_neigh = plan_peers(peers)

    async def changes(ipr: Any, index: int) -> list[_Change]:
        have_fdb = await _fdb_entries(ipr, index)
        have_neigh = await _neigh_entries(ipr, index)
        return _diff(index, have_fdb, have_neigh, want_fdb, want_neigh)

    async def apply(ipr: Any, index: int) -> None:
        try:
            await _send(ipr, [change.msg for change in await changes(ipr, index)])
            return
        except NetlinkError:
            pass
        # Something failed, and a batch does not say what. Read the tables again and
        # send what is still to do one request at a time, so the failure can be named;
        # a delete that finds nothing lost a race with another writer, and is done.
        for change in await changes(ipr, index):
            try:
                await _send(ipr, [change.msg])
            except NetlinkError as exc:
                if change.delete and exc.code == errno.ENOENT:
                    continue
                raise errors.EngineFailure(
                    f"programming {change.what} on {VXLAN} in {ns}: {os.strerror(exc.code)}"
                ) from exc

    with _kernel_errors(f"programming the peers of {VXLAN} in {ns}"):
        _on_vxlan(ns, apply)


def peer_table(ns: str) -> list[Peer]:
    """The peers programmed now: neighbour entries whose MAC has an FDB entry."""
    _check_ns(ns)

    async def read(ipr: Any, index: int) -> list[Peer]:
        fdb = await _fdb_entries(ipr, index)
        return sorted(
            Peer(ip=ip, mac=mac, vtep=vtep)
            for ip, mac in (await _neigh_entries(ipr, index)).items()
            for vtep in fdb.get(mac, ())
        )

    with _kernel_errors(f"reading the peers of {VXLAN} in {ns}"):
        return _on_vxlan(ns, read)


# -- containers ---------------------------------------------------------------------


def attach(
    ns: str,
    *,
    container_netns: str,
    host_ifname: str,
    ifname: str,
    address: IPv4Interface,
    mac: str,
    mtu: int,
) -> None:
    """A veth: `host_ifname` on br0 in `ns`, `ifname` (mac, mtu, address, up) in the
    container's namespace. No default route. Nothing is left if it fails."""
    _check_ns(ns)
    _check_ns(container_netns)
    _check_name("interface name", host_ifname)
    _check_name("interface name", ifname)
    mac = _check_mac(mac)
    _check_mtu(mtu)
    if not os.path.exists(netns.netns_path(container_netns)):
        raise errors.EngineFailure(f"attaching to {ns}: no network namespace {container_netns}")

    made = False

    def host_side(ipr: Any) -> None:
        nonlocal made
        ipr.link(
            "add",
            ifname=host_ifname,
            kind="veth",
            peer={"ifname": ifname, "net_ns_fd": container_netns},
        )
        made = True
        index = _index(ipr, host_ifname)
        ipr.link("set", index=index, mtu=mtu, master=_index(ipr, BRIDGE))
        ipr.link("set", index=index, state="up")

    def container_side(ipr: Any) -> None:
        index = _index(ipr, ifname)
        ipr.link("set", index=index, address=mac, mtu=mtu)
        ipr.addr("add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen)
        ipr.link("set", index=index, state="up")

    try:
        with _kernel_errors(f"creating veth {host_ifname} in {ns}"):
            in_netns(ns, host_side)
        with _kernel_errors(f"configuring {ifname} in {container_netns}"):
            in_netns(container_netns, container_side)
    except BaseException:
        if made:  # never a link of that name that was there before
            with contextlib.suppress(errors.EngineFailure):
                detach(ns, host_ifname)
        raise


def detach(ns: str, host_ifname: str) -> None:
    """Delete the container's veth (both ends); idempotent, also if `ns` is gone."""
    _check_ns(ns)
    _check_name("interface name", host_ifname)
    if ns not in netns.list_netns():
        return
    with _kernel_errors(f"deleting veth {host_ifname} in {ns}"):
        in_netns(ns, lambda ipr: netns.delete_with(ipr, host_ifname))


# -- the host side of the ingress network -------------------------------------------


def connect_host(
    ns: str,
    *,
    host_ifname: str,
    host_address: IPv4Interface,
    ns_ifname: str,
    ns_address: IPv4Interface,
) -> None:
    """A routed veth between the current namespace and `ns`; idempotent.

    `host_ifname` (here) gets `host_address` and route_localnet (DNAT of 127.0.0.1
    to an ingress address); `ns_ifname` (in `ns`) gets `ns_address` and `ns`'s
    default route goes via `host_address.ip`."""
    _check_ns(ns)
    _check_name("interface name", host_ifname)
    _check_name("interface name", ns_ifname)
    if host_address.network != ns_address.network:
        raise errors.InvalidArgument(f"{host_address} and {ns_address} are not on one subnet")
    made = False
    try:
        with _kernel_errors(f"connecting {ns} to the host"), _iproute() as ipr:
            host_index = _find(ipr, host_ifname)
            ns_index = in_netns(ns, lambda nsr: _find(nsr, ns_ifname))
            if host_index is None or ns_index is None:
                # Half a pair (the namespace was re-made, or one end deleted) is
                # replaced whole: a leftover end would block its name.
                if host_index is not None:
                    ipr.link("del", index=host_index)
                if ns_index is not None:
                    in_netns(ns, lambda nsr: netns.delete_with(nsr, ns_ifname))
                ipr.link(
                    "add",
                    ifname=host_ifname,
                    kind="veth",
                    peer={"ifname": ns_ifname, "net_ns_fd": ns},
                )
                made = True
            index = _index(ipr, host_ifname)
            _ensure_address(ipr, index, host_address)
            ipr.link("set", index=index, state="up")
        set_sysctl(f"net/ipv4/conf/{host_ifname}/route_localnet", "1")

        def ns_side(ipr: Any) -> None:
            index = _index(ipr, ns_ifname)
            _ensure_address(ipr, index, ns_address)
            ipr.link("set", index=index, state="up")
            ipr.route("replace", dst="0.0.0.0/0", gateway=str(host_address.ip), oif=index)

        with _kernel_errors(f"configuring {ns_ifname} in {ns}"):
            in_netns(ns, ns_side)
    except BaseException:
        if made:
            with contextlib.suppress(errors.EngineFailure):
                disconnect_host(host_ifname)
        raise


def _ensure_address(ipr: Any, index: int, want: IPv4Interface) -> None:
    for addr in ipr.get_addr(index=index, family=socket.AF_INET):
        if (
            addr.get_attr("IFA_LOCAL") == str(want.ip)
            and addr["prefixlen"] == want.network.prefixlen
        ):
            return
    ipr.addr("add", index=index, address=str(want.ip), prefixlen=want.network.prefixlen)


def disconnect_host(host_ifname: str) -> None:
    """Delete the ingress veth (both ends) from the current namespace; idempotent."""
    _check_name("interface name", host_ifname)
    netns.delete_link(host_ifname)

"""overlay.vxlan logic that needs no kernel: MACs, the peer plan and diff, input validation.

Every check here raises before any namespace or socket is touched."""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv4Interface

import pytest
from pyroute2.netlink import NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST
from pyroute2.netlink.rtnl import RTM_DELNEIGH, RTM_NEWNEIGH, ndmsg

from api import errors
from overlay import vxlan
from overlay.vxlan import Peer, mac_for, plan_peers

pytestmark = pytest.mark.unit

A = IPv4Address("10.0.9.2")
B = IPv4Address("10.0.9.3")
NODE1 = IPv4Address("198.18.0.1")
NODE2 = IPv4Address("198.18.0.2")


def test_mac_for_is_dockers() -> None:
    assert mac_for(IPv4Address("10.0.0.2")) == "02:42:0a:00:00:02"
    assert mac_for(IPv4Address("172.18.255.1")) == "02:42:ac:12:ff:01"


def test_peers_sort_by_address() -> None:
    peers = [Peer(B, mac_for(B), NODE1), Peer(A, mac_for(A), NODE2)]
    assert sorted(peers)[0].ip == A
    assert Peer(A, mac_for(A), NODE1) == Peer(A, mac_for(A), NODE1)


def test_plan_peers_builds_both_tables() -> None:
    fdb, neigh = plan_peers([Peer(A, mac_for(A).upper(), NODE1), Peer(B, mac_for(B), NODE2)])
    assert fdb == {mac_for(A): NODE1, mac_for(B): NODE2}
    assert neigh == {A: mac_for(A), B: mac_for(B)}
    assert plan_peers([Peer(A, mac_for(A), NODE1)] * 2) == plan_peers([Peer(A, mac_for(A), NODE1)])
    assert plan_peers([]) == ({}, {})


@pytest.mark.parametrize(
    "peers",
    [
        [Peer(A, mac_for(A), NODE1), Peer(A, mac_for(A), NODE2)],  # one MAC on two nodes
        [Peer(A, mac_for(A), NODE1), Peer(A, mac_for(B), NODE1)],  # one address, two MACs
        [Peer(A, "01:00:5e:00:00:01", NODE1)],  # multicast
        [Peer(A, "02:42:0a:00:09", NODE1)],  # short
        [Peer(A, "zz:42:0a:00:09:02", NODE1)],
    ],
)
def test_bad_peers_are_rejected(peers: list[Peer]) -> None:
    with pytest.raises(errors.InvalidArgument):
        plan_peers(peers)
    with pytest.raises(errors.InvalidArgument):
        vxlan.set_peers("pstest-vx-unit-none", peers)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"vni": 0},
        {"vni": 1 << 24},
        {"mtu": 67},
        {"mtu": 65536},
        {"ns": "../etc"},
        {"ns": ""},
        {"ns": "a/b"},
    ],
)
def test_ensure_network_rejects_bad_input(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {
        "ns": "pstest-vx-unit-none",
        "vni": 4097,
        "local": NODE1,
        "mtu": 1450,
        **kwargs,
    }
    ns = args.pop("ns")
    with pytest.raises(errors.InvalidArgument):
        vxlan.ensure_network(ns, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"host_ifname": "a-name-longer-than-15"},
        {"host_ifname": "has space"},
        {"ifname": ""},
        {"mac": "ff:ff:ff:ff:ff:ff"},
        {"mtu": 10},
        {"container_netns": "../x"},
    ],
)
def test_attach_rejects_bad_input(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {
        "container_netns": "pstest-vx-unit-c",
        "host_ifname": "veth0",
        "ifname": "eth1",
        "address": IPv4Interface("10.0.9.2/24"),
        "mac": mac_for(A),
        "mtu": 1450,
        **kwargs,
    }
    with pytest.raises(errors.InvalidArgument):
        vxlan.attach("pstest-vx-unit-none", **args)  # type: ignore[arg-type]


def test_connect_host_wants_one_subnet() -> None:
    with pytest.raises(errors.InvalidArgument):
        vxlan.connect_host(
            "pstest-vx-unit-none",
            host_ifname="vgw0",
            host_address=IPv4Interface("10.255.0.1/24"),
            ns_ifname="vgwns0",
            ns_address=IPv4Interface("10.255.1.2/24"),
        )


def _summary(changes: list[vxlan._Change]) -> list[tuple[str, int, int, int, dict[str, str]]]:
    """(kind, family, NLM flags beyond request/ack, ndm flags, attrs) of each request."""
    out = []
    for change in changes:
        msg = change.msg
        kind = {RTM_NEWNEIGH: "new", RTM_DELNEIGH: "del"}[msg["header"]["type"]]
        assert msg["ifindex"] == 7
        extra = msg["header"]["flags"] & ~(NLM_F_REQUEST | NLM_F_ACK)
        attrs = {ndmsg.ndmsg.nla2name(name): value for name, value in msg["attrs"]}
        out.append((kind, msg["family"], extra, msg["flags"], attrs))
    return out


def test_diff_adds_missing_replaces_moved_and_deletes_extra() -> None:
    c = IPv4Address("10.0.9.4")
    gone = IPv4Address("10.0.9.5")
    want_fdb, want_neigh = plan_peers(
        [Peer(A, mac_for(A), NODE1), Peer(B, mac_for(B), NODE2), Peer(c, mac_for(c), NODE1)]
    )
    have_fdb = {mac_for(A): {NODE1}, mac_for(B): {NODE1}, mac_for(gone): {NODE2}}
    have_neigh = {A: mac_for(A), B: mac_for(B), gone: mac_for(gone)}
    self_ = ndmsg.flags["self"]
    bridge, inet = socket.AF_BRIDGE, socket.AF_INET
    assert _summary(vxlan._diff(7, have_fdb, have_neigh, want_fdb, want_neigh)) == [
        # B moved to NODE2: its entry is replaced in place
        (
            "new",
            bridge,
            NLM_F_CREATE | NLM_F_REPLACE,
            self_,
            {"lladdr": mac_for(B), "dst": str(NODE2)},
        ),
        (
            "new",
            bridge,
            NLM_F_CREATE | NLM_F_APPEND,
            self_,
            {"lladdr": mac_for(c), "dst": str(NODE1)},
        ),
        ("new", inet, NLM_F_CREATE | NLM_F_REPLACE, 0, {"dst": str(c), "lladdr": mac_for(c)}),
        ("del", bridge, 0, self_, {"lladdr": mac_for(gone)}),
        ("del", inet, 0, 0, {"dst": str(gone)}),
    ]
    # FDB writes are vxlan0's own permanent entries; neighbour writes permanent.
    for change in vxlan._diff(7, {}, {}, want_fdb, want_neigh):
        permanent = ndmsg.states["permanent"]
        assert change.msg["state"] & permanent == permanent
    # Nothing to do when the tables match.
    have = ({mac: {vtep} for mac, vtep in want_fdb.items()}, dict(want_neigh))
    assert vxlan._diff(7, *have, want_fdb, want_neigh) == []


def test_diff_starts_over_an_entry_with_several_destinations() -> None:
    want_fdb, want_neigh = plan_peers([Peer(A, mac_for(A), NODE1)])
    changes = vxlan._diff(7, {mac_for(A): {NODE1, NODE2}}, {A: mac_for(A)}, want_fdb, want_neigh)
    self_ = ndmsg.flags["self"]
    assert _summary(changes) == [
        ("del", socket.AF_BRIDGE, 0, self_, {"lladdr": mac_for(A)}),
        (
            "new",
            socket.AF_BRIDGE,
            NLM_F_CREATE | NLM_F_APPEND,
            self_,
            {"lladdr": mac_for(A), "dst": str(NODE1)},
        ),
    ]
    assert [change.delete for change in changes] == [True, False]

"""The link layer of the bridge driver: namespaces, the bridge, veth pairs, sysctls.

A thin applier over pyroute2 with no state of its own: every function does one
kernel change, by name, and the ones that remove are idempotent (a missing object
is not an error), so the driver can undo and re-run them freely. Failures surface
as `api.errors.EngineFailure`.

Everything but the container side happens in the *current* network namespace (the
daemon's, or a test's namespace when run under `nsenter --net=...`): netlink sockets
are opened per call in the calling thread, and /proc/sys/net resolves to the calling
thread's namespace. The container side is reached from a short-lived thread that
enters the named namespace (namespaces are per thread), never by forking: the daemon
runs gRPC threads, and a forked child of such a process crashes.

Order for a container on the bridge (`add_container_link`):

1. the veth pair is created with its peer directly inside the container's namespace,
   already named eth0, so no interface with a container's name ever appears here;
2. the host side gets the bridge's MTU, joins the bridge with hairpin mode on (a
   container reaching its own published port through the host comes back out the
   port it went in by, when bridged traffic passes netfilter) and goes up;
3. inside the namespace eth0 gets the MTU and the address, goes up, and the default
   route goes via the gateway (which needs eth0 up and addressed first).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns
from pyroute2.netlink.exceptions import NetlinkError

from api import errors

T = TypeVar("T")
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = Path("/run/netns")
CONTAINER_IFNAME = "eth0"
BRIDGE_PORT_HAIRPIN = 1  # IFLA_BRPORT_MODE


def netns_path(name: str) -> str:
    return str(NETNS_RUN_DIR / name)


@contextlib.contextmanager
def _kernel_errors(what: str) -> Iterator[None]:
    """Report netlink and OS failures as EngineFailure naming the operation."""
    try:
        yield
    except NetlinkError as exc:
        raise errors.EngineFailure(f"{what}: {os.strerror(exc.code)}") from exc
    except OSError as exc:
        raise errors.EngineFailure(f"{what}: {exc.strerror or exc}") from exc


def _iproute() -> Any:
    """A netlink route socket in the calling thread's network namespace."""
    return IPRoute(groups=0)


def _in_thread(fn: Callable[[], T]) -> T:
    """Run `fn` in a fresh thread and hand back its result or exception.

    Network namespaces are per thread: a thread that enters one (setns) or makes one
    (unshare) changes nothing for the rest of the daemon, and it ends right after.
    pyroute2's own netns helpers fork a child instead, which crashes in a process
    that runs gRPC threads, so they are not used here."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc

    thread = threading.Thread(target=run, name="netns")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


def _enter(netns: str) -> None:
    fd = os.open(netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {netns}: {os.strerror(err)}")
    finally:
        os.close(fd)


def in_netns(netns: str, fn: Callable[[Any], T]) -> T:
    """Call fn(ipr) with a route socket inside `netns` (from a thread that entered it)."""

    def run() -> T:
        _enter(netns)
        with _iproute() as ipr:
            return fn(ipr)

    return _in_thread(run)


def _create_in_thread(name: str) -> None:
    if _libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare: {os.strerror(err)}")
    # Binds /proc/thread-self/ns/net to /run/netns/<name>, as `ip netns add` does.
    pr_netns.attach(name, "thread-self")


def _find(ipr: Any, ifname: str) -> int | None:
    # A kernel-side lookup by name: link_lookup() would dump every link of the host.
    try:
        reply = ipr.link("get", ifname=ifname)
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        raise
    index: int = reply[0]["index"]
    return index


def _index(ipr: Any, ifname: str) -> int:
    index = _find(ipr, ifname)
    if index is None:
        raise errors.EngineFailure(f"no link named {ifname}")
    return index


# -- namespaces ---------------------------------------------------------------------


def create_netns(name: str, *, lo_up: bool = True) -> str:
    """A new named network namespace, with `lo` up unless the caller does it; returns
    its path.

    Refuses a name already in use; removes what it made if it fails partway."""
    if os.path.lexists(netns_path(name)):
        raise errors.EngineFailure(f"network namespace {name} already exists")
    try:
        with _kernel_errors(f"creating network namespace {name}"):
            _in_thread(lambda: _create_in_thread(name))
        if lo_up:
            with _kernel_errors(f"bringing up lo in {name}"):
                in_netns(name, _lo_up)
    except errors.EngineFailure:
        with contextlib.suppress(errors.EngineFailure):
            remove_netns(name)
        raise
    return netns_path(name)


def _lo_up(ipr: Any) -> None:
    ipr.link("set", index=_index(ipr, "lo"), state="up")


def remove_netns(name: str) -> None:
    """Unmount and unlink the namespace; its links go when its last user does."""
    if not os.path.lexists(netns_path(name)):
        return
    with _kernel_errors(f"removing network namespace {name}"):
        pr_netns.remove(name)


def list_netns() -> list[str]:
    return sorted(pr_netns.listnetns(str(NETNS_RUN_DIR)))


def link_names(netns: str | None = None) -> list[str]:
    """Names of the links in the current namespace (or in `netns`)."""

    def names(ipr: Any) -> list[str]:
        return sorted(link.get_attr("IFLA_IFNAME") for link in ipr.get_links())

    with _kernel_errors("listing links"):
        if netns is not None:
            return in_netns(netns, names)
        with _iproute() as ipr:
            return names(ipr)


# -- the bridge ---------------------------------------------------------------------


def ensure_bridge(name: str, *, gateway: IPv4Interface) -> int:
    """Create the bridge if missing, with the gateway address, up; returns its MTU.

    Also turns on forwarding here and route_localnet on the bridge (DNAT of
    127.0.0.1 to a container). The bridge gets a fixed random MAC: otherwise it takes
    the lowest MAC among its ports, and the gateway's MAC would change under the
    containers' ARP caches as containers come and go."""
    with _kernel_errors(f"setting up bridge {name}"), _iproute() as ipr:
        if _find(ipr, name) is None:
            ipr.link("add", ifname=name, kind="bridge", address=_random_mac())
        index = _index(ipr, name)
        if not _has_address(ipr, index, gateway):
            ipr.addr(
                "add", index=index, address=str(gateway.ip), prefixlen=gateway.network.prefixlen
            )
        ipr.link("set", index=index, state="up")
        mtu: int = ipr.get_links(index)[0].get_attr("IFLA_MTU")
    set_sysctl("net/ipv4/ip_forward", "1")
    set_sysctl(f"net/ipv4/conf/{name}/route_localnet", "1")
    return mtu


def remove_bridge(name: str) -> None:
    delete_link(name)


def _has_address(ipr: Any, index: int, gateway: IPv4Interface) -> bool:
    return any(
        addr.get_attr("IFA_ADDRESS") == str(gateway.ip)
        and addr.get("prefixlen") == gateway.network.prefixlen
        for addr in ipr.get_addr(index=index, family=2)
    )


def _random_mac() -> str:
    # Locally administered, unicast (02:...), like the kernel's own random MACs.
    return "02:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(5))


def set_sysctl(key: str, value: str) -> None:
    """Write /proc/sys/<key> (resolved in the calling thread's network namespace)."""
    with _kernel_errors(f"setting {key.replace('/', '.')}"):
        Path("/proc/sys", key).write_text(value + "\n")


# -- veth pairs ---------------------------------------------------------------------


def add_container_link(
    host_ifname: str,
    *,
    bridge: str,
    netns: str,
    address: IPv4Interface,
    gateway: IPv4Address,
    mtu: int,
) -> None:
    """The container's eth0 in `netns`, its peer `host_ifname` on the bridge."""
    with _kernel_errors(f"creating veth {host_ifname}"), _iproute() as ipr:
        ipr.link(
            "add",
            ifname=host_ifname,
            kind="veth",
            peer={"ifname": CONTAINER_IFNAME, "net_ns_fd": netns},
        )
        index = _index(ipr, host_ifname)
        ipr.link("set", index=index, mtu=mtu, master=_index(ipr, bridge))
        ipr.brport("set", index=index, mode=BRIDGE_PORT_HAIRPIN)
        ipr.link("set", index=index, state="up")

    def configure(ipr: Any) -> None:
        _lo_up(ipr)
        index = _index(ipr, CONTAINER_IFNAME)
        ipr.link("set", index=index, mtu=mtu)
        ipr.addr("add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen)
        ipr.link("set", index=index, state="up")
        ipr.route("add", dst="0.0.0.0/0", gateway=str(gateway))

    with _kernel_errors(f"configuring {CONTAINER_IFNAME} in {netns}"):
        in_netns(netns, configure)


def delete_link(name: str) -> None:
    """Delete a link of the current namespace (both ends, for a veth); idempotent."""
    with _kernel_errors(f"deleting link {name}"), _iproute() as ipr:
        delete_with(ipr, name)


def delete_with(ipr: Any, name: str) -> None:
    """Delete a link of the namespace `ipr` is in; a missing one is not an error."""
    index = _find(ipr, name)
    if index is None:
        return
    try:
        ipr.link("del", index=index)
    except NetlinkError as exc:
        if exc.code != errno.ENODEV:  # gone meanwhile: its namespace went away
            raise

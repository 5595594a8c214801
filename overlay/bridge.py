"""The single-host bridge driver: `--network bridge | none | host` and `-p` publishing.

`BridgeDriver` fills in `agent.containers.network.NetworkDriver` (structurally; this
package never imports `agent`). Per container on the bridge it makes a named network
namespace `<netns_prefix><id[:12]>` (/run/netns/...), a veth pair (`vps<id[:11]>` on
the bridge, `eth0` inside), an address from the subnet (the first one is the gateway,
on the bridge) and one DNAT rule per published port in `table ip pyswarm`.

    driver = BridgeDriver(state_dir=Path("/var/lib/pyswarm/network"))
    driver.restore(live=[...])                 # at daemon start
    att = driver.attach(cid, mode="bridge", ports=[PortBinding(host_port=8080, container_port=80)])
    # att.netns_path for the OCI config, att.ip_address, att.ports (host ports resolved)
    driver.detach(cid)

Design:
- The driver's state is a dict container id -> `Endpoint`, persisted to
  `state_dir/bridge.json` (temp file + os.replace) after every change. The shared
  kernel objects follow from it: the bridge and the nftables table exist exactly when
  some endpoint is on the bridge, and the table's content is `nft.plan_ruleset(state)`,
  re-applied whole and atomically on every change. `host` mode makes nothing.
- attach, in order: validate (mode, ports) -> resolve host ports -> allocate the
  address -> bridge -> namespace -> veth -> record -> ruleset -> save. Each step
  registers its undo; if a later step raises, the undos run in reverse and the last
  one re-syncs the shared objects, so nothing is left behind.
- detach, in order: forget -> ruleset (traffic stops first) -> veth -> namespace ->
  address -> bridge if unused -> save. Every step runs even if one fails; the first
  failure is raised at the end. A later ruleset apply heals a failed one.
- restore(live) tears down the endpoints of other ids (and of live ones whose
  namespace is gone), then sweeps namespaces named `<netns_prefix>` + 12 hex digits
  and links named `vps` + 11 hex digits that no endpoint owns (made by a daemon that
  died mid-attach), then re-syncs the shared objects.
- One lock serialises every public method (the daemon calls from gRPC threads).
- One driver per network namespace: the bridge and the table are per namespace, the
  netns prefix keeps the names in the machine-wide /run/netns apart.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address
from pathlib import Path

from api import engine_pb2, errors
from api.ipam import Ipam
from overlay import netns, nft

log = logging.getLogger(__name__)

NFT_TABLE = "pyswarm"
VETH_PREFIX = "vps"
IDLE_GRACE = 10.0  # seconds an unused bridge and table stay before removal
STATE_FILE = "bridge.json"
STATE_VERSION = 1
_CONTAINER_ID = re.compile(r"[0-9a-f]{12,64}")
_VETH_NAME = re.compile(VETH_PREFIX + r"[0-9a-f]{11}")


class NetworkMode(StrEnum):
    BRIDGE = "bridge"
    HOST = "host"
    NONE = "none"


def parse_mode(mode: str) -> NetworkMode:
    """docker's built-in networks; "" and "default" mean the bridge."""
    if mode in ("", "default"):
        return NetworkMode.BRIDGE
    try:
        return NetworkMode(mode)
    except ValueError:
        raise errors.InvalidArgument(f"network {mode} not found") from None


@dataclass(frozen=True)
class Attachment:
    """A container's network as the engine needs it (see agent.containers.network)."""

    netns_path: str | None
    ip_address: str = ""
    gateway: str = ""
    ports: tuple[engine_pb2.PortBinding, ...] = ()


@dataclass(frozen=True)
class Endpoint:
    """What the driver made for one container (none or bridge mode); persisted."""

    container_id: str
    mode: NetworkMode
    netns: str
    ip: IPv4Address | None = None
    veth: str = ""
    ports: tuple[nft.PortSpec, ...] = field(default=())

    def publications(self) -> list[nft.Publication]:
        if self.ip is None:
            return []
        return [nft.Publication(self.container_id, self.ip, port) for port in self.ports]

    def to_json(self) -> dict[str, object]:
        return {
            "mode": str(self.mode),
            "netns": self.netns,
            "ip": str(self.ip) if self.ip else "",
            "veth": self.veth,
            "ports": [port.to_json() for port in self.ports],
        }

    @classmethod
    def from_json(cls, container_id: str, data: dict[str, object]) -> Endpoint:
        ports = data.get("ports", [])
        assert isinstance(ports, list)
        return cls(
            container_id=container_id,
            mode=NetworkMode(str(data["mode"])),
            netns=str(data["netns"]),
            ip=IPv4Address(str(data["ip"])) if data.get("ip") else None,
            veth=str(data.get("veth", "")),
            ports=tuple(nft.PortSpec.from_json(port) for port in ports),
        )


class BridgeDriver:
    """Container networking on one host: a bridge, namespaces, veths, nftables NAT."""

    def __init__(
        self,
        *,
        state_dir: Path,
        bridge: str = "pyswarm0",
        subnet: str = "172.30.0.0/16",
        netns_prefix: str = "pyswarm-",
        idle_grace: float = IDLE_GRACE,
    ) -> None:
        self.bridge = bridge
        self.netns_prefix = netns_prefix
        self.idle_grace = idle_grace
        # Pending removal of the unused bridge and table (see _release_when_idle).
        self._idle_timer: threading.Timer | None = None
        self._state_path = Path(state_dir) / STATE_FILE
        self._ipam = Ipam(subnet, network_name=bridge)
        self._nft = nft.find_nft()
        self._applied: str | None = None  # the ruleset last applied successfully
        self._bridge_mtu: int | None = None  # set once this driver has ensured the bridge
        self._lock = threading.Lock()
        self._closed = False
        self._endpoints = _load_state(self._state_path)
        for endpoint in self._endpoints.values():
            self._reserve(endpoint)

    # -- the NetworkDriver protocol -------------------------------------------------

    def attach(
        self,
        container_id: str,
        *,
        mode: str,
        ports: Sequence[engine_pb2.PortBinding],
        overlays: Sequence[engine_pb2.OverlayAttachment] = (),
    ) -> Attachment:
        """Create the container's network; raises leaving nothing behind.

        Ports are ignored for host and none (as docker does; the engine warns).
        Overlays are the swarm driver's (overlay.swarmnet), which wraps this one."""
        if overlays:
            raise errors.InvalidArgument("overlay networks need the node to be in a swarm")
        network_mode = parse_mode(mode)
        _check_container_id(container_id)
        if network_mode is NetworkMode.HOST:
            return Attachment(netns_path=None)
        specs = nft.parse_ports(ports) if network_mode is NetworkMode.BRIDGE else ()
        with self._lock:
            if self._closed:
                raise errors.Unavailable("the network driver is shut down")
            self._check_free(container_id)
            try:
                if network_mode is NetworkMode.NONE:
                    endpoint = self._attach_none(container_id)
                else:
                    endpoint = self._attach_bridge(container_id, specs)
            except errors.PyswarmError:
                raise
            except Exception as exc:  # pyroute2's own errors; already undone
                raise errors.EngineFailure(f"network setup failed: {exc}") from exc
            return self._attachment(endpoint)

    def detach(self, container_id: str) -> None:
        """Remove the container's rules, veth, namespace and address; idempotent."""
        with self._lock:
            endpoint = self._endpoints.pop(container_id, None)
            if endpoint is None:
                return
            _run_all(
                [
                    self._arm_idle_timer,  # first, so the ruleset keeps the table
                    self._sync_ruleset,
                    *self._teardown_steps(endpoint),
                    self._remove_bridge_unless_idle_grace,
                    self._save,
                ]
            )

    def restore(self, live: Sequence[str]) -> None:
        """Keep the networks of `live` containers, remove everything else we made."""
        keep = set(live)
        with self._lock:
            steps: list[Callable[[], None]] = []
            for container_id in sorted(self._endpoints):
                endpoint = self._endpoints[container_id]
                if container_id not in keep or not os.path.lexists(
                    netns.netns_path(endpoint.netns)
                ):
                    del self._endpoints[container_id]
                    steps += self._teardown_steps(endpoint)
            steps += [self._sweep, self._sync_shared, self._save]
            _run_all(steps)

    def close(self) -> None:
        """Refuse further attaches. The kernel objects of attached containers stay:
        containers outlive the daemon and `restore` adopts them at the next start; an
        unused bridge and table waiting out their idle grace go now."""
        with self._lock:
            self._closed = True
            if self._idle_timer is not None:
                self._idle_timer.cancel()
                self._idle_timer = None
                _run_all([self._sync_ruleset, self._remove_bridge_if_unused])

    def attachment(self, container_id: str) -> Attachment | None:
        """The network of an attached container (e.g. one adopted by `restore`)."""
        with self._lock:
            endpoint = self._endpoints.get(container_id)
            return self._attachment(endpoint) if endpoint else None

    # -- attach ---------------------------------------------------------------------

    def _attach_none(self, container_id: str) -> Endpoint:
        name = self.netns_name(container_id)
        with contextlib.ExitStack() as undo:
            netns.create_netns(name)
            undo.callback(_quietly(netns.remove_netns, name))
            endpoint = Endpoint(container_id, NetworkMode.NONE, netns=name)
            self._record(endpoint, undo=undo)
            self._save()
            undo.pop_all()
        return endpoint

    def _attach_bridge(self, container_id: str, specs: Sequence[nft.PortSpec]) -> Endpoint:
        if self._idle_timer is not None:  # in use again: keep the bridge and table
            self._idle_timer.cancel()
            self._idle_timer = None
        published = [port for ep in self._endpoints.values() for port in ep.ports]
        resolved = nft.resolve_ports(specs, published=published, probe=nft.probe_host_port)
        name = self.netns_name(container_id)
        veth = _veth_name(container_id)
        with contextlib.ExitStack() as undo:
            # Registered first, so it runs last: drops the bridge/table if unused.
            undo.callback(_quietly(self._sync_shared))
            ip = self._ipam.allocate()
            undo.callback(self._ipam.release, ip)
            mtu = self._ensure_bridge()
            netns.create_netns(name, lo_up=False)  # add_container_link brings lo up
            undo.callback(_quietly(netns.remove_netns, name))
            # Registered before the veth exists, to catch a half-made one.
            undo.callback(_quietly(netns.delete_link, veth))
            netns.add_container_link(
                veth,
                bridge=self.bridge,
                netns=name,
                address=self._ipam.interface(ip),
                gateway=self._ipam.gateway,
                mtu=mtu,
            )
            endpoint = Endpoint(container_id, NetworkMode.BRIDGE, name, ip, veth, resolved)
            self._record(endpoint, undo=undo)
            self._sync_ruleset()
            self._save()
            undo.pop_all()
        return endpoint

    def _check_free(self, container_id: str) -> None:
        """Refuse a second attach, and an id whose short names (netns: 12 hex digits,
        veth: 11) clash with another container's: undoing a failed attach deletes
        links and namespaces by name, so two owners of one name must never exist."""
        if container_id in self._endpoints:
            raise errors.Conflict(f"container {container_id[:12]} already has a network")
        name, veth = self.netns_name(container_id), _veth_name(container_id)
        for other in self._endpoints.values():
            if other.netns == name or other.veth == veth:
                raise errors.Conflict(
                    f"container {container_id[:12]}: network names clash with container "
                    f"{other.container_id[:12]}"
                )

    def _record(self, endpoint: Endpoint, *, undo: contextlib.ExitStack) -> None:
        self._endpoints[endpoint.container_id] = endpoint
        undo.callback(self._endpoints.pop, endpoint.container_id, None)

    def _attachment(self, endpoint: Endpoint) -> Attachment:
        on_bridge = endpoint.ip is not None
        return Attachment(
            netns_path=netns.netns_path(endpoint.netns),
            ip_address=str(endpoint.ip) if on_bridge else "",
            gateway=str(self._ipam.gateway) if on_bridge else "",
            ports=tuple(port.to_binding() for port in endpoint.ports),
        )

    # -- shared objects: the bridge and the nftables table --------------------------

    def _on_bridge(self) -> bool:
        return any(ep.ip is not None for ep in self._endpoints.values())

    def _sync_shared(self) -> None:
        """Make the bridge and the table match the endpoints (both gone when unused).

        The bridge goes even if the ruleset cannot be applied."""
        if self._on_bridge():
            self._ensure_bridge()
        _run_all([self._sync_ruleset, self._remove_bridge_if_unused])

    def _sync_ruleset(self) -> None:
        script = nft.plan_ruleset(
            table=NFT_TABLE,
            bridge=self.bridge,
            subnet=self._ipam.network,
            in_use=self._on_bridge() or self._idle_timer is not None,
            publications=[p for ep in self._endpoints.values() for p in ep.publications()],
        )
        # The whole table is replaced in one transaction; skip it when nothing changed
        # (a container without published ports joining a bridge already in use).
        if script == self._applied:
            return
        self._applied = None  # unknown until this apply succeeds
        nft.apply_ruleset(script, nft=self._nft)
        self._applied = script

    def _ensure_bridge(self) -> int:
        """The bridge's MTU, creating the bridge first if this driver has not (or has
        removed it since): checking it on every attach costs several netlink dumps."""
        if self._bridge_mtu is None:
            self._bridge_mtu = netns.ensure_bridge(
                self.bridge, gateway=self._ipam.gateway_interface
            )
        return self._bridge_mtu

    def _arm_idle_timer(self) -> None:
        """Remove the bridge and table once unused for `idle_grace` seconds.

        Trade-off: removing them with the last container is what "nothing left when
        unused" asks, but `run --rm` in a loop would then build and tear down the
        bridge and table every time (~100 ms each here); a short grace keeps them
        across such a loop and still removes them soon after."""
        if self._on_bridge() or self._bridge_mtu is None or self.idle_grace <= 0:
            return
        if self._idle_timer is None:
            self._idle_timer = threading.Timer(self.idle_grace, self._idle_expired)
            self._idle_timer.daemon = True
            self._idle_timer.start()

    def _remove_bridge_unless_idle_grace(self) -> None:
        if self._idle_timer is None:
            self._remove_bridge_if_unused()

    def _idle_expired(self) -> None:
        with self._lock:
            if self._idle_timer is None:
                return
            self._idle_timer = None
            if not self._on_bridge():
                _run_all([self._sync_ruleset, self._remove_bridge_if_unused])

    def _remove_bridge_if_unused(self) -> None:
        if not self._on_bridge():
            self._bridge_mtu = None
            netns.remove_bridge(self.bridge)

    # -- teardown -------------------------------------------------------------------

    def _teardown_steps(self, endpoint: Endpoint) -> list[Callable[[], None]]:
        """Undo one endpoint's own objects; the veth first, its namespace after."""
        steps: list[Callable[[], None]] = []
        if endpoint.veth:
            steps.append(functools.partial(netns.delete_link, endpoint.veth))
        steps.append(functools.partial(netns.remove_netns, endpoint.netns))
        if endpoint.ip is not None:
            steps.append(functools.partial(self._ipam.release, endpoint.ip))
        return steps

    def _sweep(self) -> None:
        """Remove namespaces and veths of ours that no endpoint owns."""
        owned_netns = {ep.netns for ep in self._endpoints.values()}
        owned_veths = {ep.veth for ep in self._endpoints.values()}
        pattern = re.compile(re.escape(self.netns_prefix) + r"[0-9a-f]{12}")
        steps: list[Callable[[], None]] = []
        for name in netns.list_netns():
            if pattern.fullmatch(name) and name not in owned_netns:
                log.info("removing leftover network namespace %s", name)
                steps.append(functools.partial(netns.remove_netns, name))
        for name in netns.link_names():
            if _VETH_NAME.fullmatch(name) and name not in owned_veths:
                log.info("removing leftover veth %s", name)
                steps.append(functools.partial(netns.delete_link, name))
        _run_all(steps)

    # -- state ----------------------------------------------------------------------

    def netns_name(self, container_id: str) -> str:
        """The name (under /run/netns) of a container's network namespace."""
        return self.netns_prefix + container_id[:12]

    def _reserve(self, endpoint: Endpoint) -> None:
        if endpoint.ip is None:
            return
        try:
            self._ipam.reserve(endpoint.ip)
        except ValueError as exc:
            log.warning("container %s: %s", endpoint.container_id[:12], exc)

    def _save(self) -> None:
        try:
            _save_state(self._state_path, self._endpoints)
        except OSError as exc:
            raise errors.EngineFailure(f"cannot save network state: {exc}") from exc


def _veth_name(container_id: str) -> str:
    return VETH_PREFIX + container_id[:11]  # 14 characters: IFNAMSIZ allows 15


def _check_container_id(container_id: str) -> None:
    if not _CONTAINER_ID.fullmatch(container_id):
        raise errors.InvalidArgument(f"invalid container id {container_id!r}")


def _quietly(step: Callable[..., object], *args: object) -> Callable[[], None]:
    """An undo step that logs its failure instead of hiding the original error."""

    def run() -> None:
        try:
            step(*args)
        except Exception:
            log.exception("cleanup step %s failed", getattr(step, "__name__", step))

    return run


def _run_all(steps: Iterable[Callable[[], None]]) -> None:
    """Run every step even if some fail; raise the first failure at the end."""
    first: Exception | None = None
    for step in steps:
        try:
            step()
        except Exception as exc:
            log.warning("network cleanup step failed: %s", exc)
            first = first or exc
    if first is not None:
        raise first


def _load_state(path: Path) -> dict[str, Endpoint]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise errors.EngineFailure(f"cannot read network state {path}: {exc}") from None
    if data.get("version") != STATE_VERSION:
        raise errors.EngineFailure(f"unknown network state version in {path}")
    endpoints: dict[str, dict[str, object]] = data.get("endpoints", {})
    return {cid: Endpoint.from_json(cid, entry) for cid, entry in endpoints.items()}


def _save_state(path: Path, endpoints: dict[str, Endpoint]) -> None:
    """Write atomically: a crash leaves either the old file or the new one."""
    data = {
        "version": STATE_VERSION,
        "endpoints": {cid: ep.to_json() for cid, ep in sorted(endpoints.items())},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=2)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise

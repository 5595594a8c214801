"""The node's network driver in swarm mode: the bridge for eth0, overlays on top.

`SwarmNetworks` fills in `agent.containers.network.NetworkDriver` (structurally) by
wrapping the single-host `BridgeDriver`: every container keeps its bridge attachment
(eth0, the default route: docker's docker_gwbridge) and, for each overlay network in
its config, gets ethN from that network's namespace. The cluster side arrives as
`NetworkViews` from the leader (manager.netviews, via the agent: `update_views`), and
everything else follows from the views and the local containers:

- per overlay network in use here: a namespace `<prefix>ov<VNI>` holding the bridge
  br0 and vxlan0 (overlay.vxlan; the VXLAN socket stays in the node's namespace);
  a veth per container into it; peers (remote endpoints) as static FDB and neighbour
  entries. The namespace goes when its last local user does. One namespace per
  network keeps overlays apart by construction (no routes between them), and a
  subnet used twice by two networks is harmless.
- per container on an overlay: the embedded DNS at 127.0.0.11 (overlay.dns), answering
  from the views of the container's own networks, and the VIP table in the
  container's namespace (overlay.lb.plan_vips: DNAT to the ready tasks of each service).
- the routing mesh, while some service publishes an ingress port: the ingress
  network's namespace carries this node's ingress address on br0 and a veth to the
  node (169.254.230.1/30 here, .2 there); the node's table DNATs published ports into
  it and its table spreads them over the service's ready tasks (overlay.lb).

Every kernel change is idempotent and driven by comparing with what was last applied,
so `update_views` can be called with the same views again at no cost. Local
attachments are saved (`overlay.json`) so a restarted daemon re-serves DNS and the
VIP tables of the containers it adopts (`restore`), and removes what nobody uses.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Protocol

from api import engine_pb2, errors, objects_pb2
from api import swarm_pb2 as swarm
from api.networks import overlay_attachment
from overlay import lb, netns, vxlan
from overlay.bridge import Attachment, BridgeDriver
from overlay.dns import EmbeddedDns

log = logging.getLogger(__name__)

STATE_FILE = "overlay.json"
VXLAN_OVERHEAD = 50
INGRESS_HOST_IFNAME = "psw-ingress"
INGRESS_NS_IFNAME = "veth-host"
INGRESS_HOST_ADDR = IPv4Interface("169.254.230.1/30")
INGRESS_NS_ADDR = IPv4Interface("169.254.230.2/30")


class Attacher(Protocol):
    def __call__(
        self, network: str, *, container_id: str, name: str
    ) -> objects_pb2.NetworkAttachment: ...


@dataclass(frozen=True)
class Local:
    """One container's place on one overlay network of this node."""

    network_id: str
    vni: int
    ns: str
    host_ifname: str
    address: str  # "10.0.1.5/24"
    mtu: int
    ingress: bool = False


class SwarmNetworks:
    def __init__(
        self,
        bridge: BridgeDriver,
        *,
        state_dir: Path,
        prefix: str,
        dns_factory: Callable[[Callable[[str, str], list[IPv4Address] | None]], EmbeddedDns]
        | None = None,
    ) -> None:
        self.bridge = bridge
        self.prefix = prefix
        self._state_path = Path(state_dir) / STATE_FILE
        self._lock = threading.RLock()
        self._local_addr: IPv4Address | None = None
        self._node_id = ""
        self._views: dict[str, swarm.NetworkView] = {}
        self._containers: dict[str, list[Local]] = _load(self._state_path)
        self._peers: dict[str, frozenset[vxlan.Peer]] = {}  # ns -> applied
        self._lb: dict[str, str] = {}  # container id -> applied VIP script
        self._ingress: tuple[str, str] | None = None  # applied (host, sandbox) scripts
        # Lock-free reads for the DNS thread: replaced whole, never mutated.
        self._names: dict[str, dict[str, list[IPv4Address]]] = {}
        self._vips: dict[str, list[lb.Vip]] = {}  # per network, from `_reindex`
        self._attacher: Attacher | None = None
        self._detacher: Callable[[str], None] | None = None
        self._standalones: set[str] = set()  # `run --network` containers
        self._tunnel_untracked = False
        self._pending: swarm.NetworkViews | None = None
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._syncer: threading.Thread | None = None
        make_dns = dns_factory or EmbeddedDns
        self.dns = make_dns(self._lookup)

    # -- swarm membership -----------------------------------------------------------

    def join(
        self,
        *,
        node_id: str,
        local_addr: str,
        attacher: Attacher | None = None,
        detacher: Callable[[str], None] | None = None,
    ) -> None:
        """The node is in a swarm: its id, its underlay (VXLAN tunnel) address, and how
        a standalone container gets an address on an attachable overlay (`run
        --network NAME`: the agent asks the leader)."""
        with self._lock:
            self._node_id = node_id
            try:
                self._local_addr = IPv4Address(local_addr)
            except ValueError:
                log.warning("advertise address %r is not an IPv4 address: no overlays", local_addr)
                self._local_addr = None
            self._attacher = attacher
            self._detacher = detacher

    def leave(self) -> None:
        with self._lock:
            self._pending = None
            self._views = {}
            self._reconcile()
            self._node_id, self._local_addr = "", None
            self._attacher = self._detacher = None

    # -- the NetworkDriver protocol ---------------------------------------------------

    def attach(
        self,
        container_id: str,
        *,
        mode: str,
        ports: Sequence[engine_pb2.PortBinding],
        overlays: Sequence[engine_pb2.OverlayAttachment] = (),
    ) -> Attachment:
        if mode not in ("", "default", "bridge", "host", "none"):
            overlays = [self._standalone(container_id, mode)]
            mode = "bridge"
        if any(o.internal for o in overlays) and mode in ("", "default", "bridge"):
            mode = "none"  # an internal network has no way out: no eth0 on the bridge
        try:
            attachment = self.bridge.attach(container_id, mode=mode, ports=ports)
        except BaseException:
            self._forget_standalone(container_id)
            raise
        if not overlays:
            return attachment
        if attachment.netns_path is None:
            self.bridge.detach(container_id)
            raise errors.InvalidArgument("overlay networks cannot be used with --network host")
        netns_name = os.path.basename(attachment.netns_path)
        try:
            with self._lock:
                self._attach_overlays(container_id, netns_name, overlays)
        except BaseException:
            with contextlib.suppress(Exception):
                self.bridge.detach(container_id)
            self._forget_standalone(container_id)
            raise
        return attachment

    def _standalone(self, container_id: str, network: str) -> engine_pb2.OverlayAttachment:
        """`run --network NAME`: an attachable overlay of the swarm, if this node is in one."""
        attacher = self._attacher
        if attacher is None:
            raise errors.InvalidArgument(f"network {network} not found")
        attachment = attacher(network, container_id=container_id, name=container_id[:12])
        with self._lock:
            self._standalones.add(container_id)
        return overlay_attachment(attachment)

    def _forget_standalone(self, container_id: str) -> None:
        with self._lock:
            if container_id not in self._standalones:
                return
            self._standalones.discard(container_id)
            detacher = self._detacher
        if detacher is not None:
            detacher(container_id)

    def _attach_overlays(
        self,
        container_id: str,
        netns_name: str,
        overlays: Sequence[engine_pb2.OverlayAttachment],
    ) -> None:
        local_addr = self._require_local()
        made: list[Local] = []
        try:
            for index, overlay in enumerate(overlays, start=1):
                local = self._ensure_network(overlay, local_addr)
                local = Local(
                    network_id=overlay.network_id,
                    vni=overlay.vni,
                    ns=local.ns,
                    host_ifname=f"ve{container_id[:10]}{index}",
                    address=overlay.address,
                    mtu=local.mtu,
                    ingress=overlay.ingress,
                )
                address = IPv4Interface(overlay.address)
                vxlan.attach(
                    local.ns,
                    container_netns=netns_name,
                    host_ifname=local.host_ifname,
                    ifname=f"eth{index}",
                    address=address,
                    mac=vxlan.mac_for(address.ip),
                    mtu=local.mtu,
                )
                made.append(local)
            self._containers[container_id] = made
            self.dns.serve(container_id, netns_name)
            self._save()
            self._reconcile()
        except BaseException:
            self._containers.pop(container_id, None)
            with contextlib.suppress(Exception):
                self.dns.stop_serving(container_id)
            for local in made:
                with contextlib.suppress(Exception):
                    vxlan.detach(local.ns, local.host_ifname)
            with contextlib.suppress(Exception):
                self._remove_unused_networks()
                self._save()
            raise

    def detach(self, container_id: str) -> None:
        with self._lock:
            locals_ = self._containers.pop(container_id, None)
            if locals_ is not None:
                self.dns.stop_serving(container_id)
                self._lb.pop(container_id, None)
                for local in locals_:
                    with contextlib.suppress(errors.EngineFailure):
                        vxlan.detach(local.ns, local.host_ifname)
                self._save()
                self._reindex()
                self._remove_unused_networks()
        self._forget_standalone(container_id)
        self.bridge.detach(container_id)

    def restore(self, live: Sequence[str]) -> None:
        """At daemon start: keep the overlays of live containers (serving their DNS
        again), forget the others; remove overlay namespaces nobody uses."""
        self.bridge.restore(live)
        keep = set(live)
        with self._lock:
            for container_id in list(self._containers):
                if container_id not in keep:
                    del self._containers[container_id]
            for container_id in self._containers:
                netns_name = self.bridge.netns_name(container_id)
                try:
                    self.dns.serve(container_id, netns_name)
                except errors.EngineFailure as exc:
                    log.warning("container %s: no embedded DNS: %s", container_id[:12], exc)
            self._save()
            self._remove_unused_networks(sweep=True)

    def close(self) -> None:
        self._closing.set()
        self._wake.set()
        if self._syncer is not None:
            self._syncer.join(timeout=10)
        self.dns.close()
        self.bridge.close()

    def attachment(self, container_id: str) -> Attachment | None:
        return self.bridge.attachment(container_id)

    # -- the cluster's view -----------------------------------------------------------

    def update_views(self, views: swarm.NetworkViews) -> None:
        """The leader's latest views of the networks this node takes part in.

        Applied by the driver's own thread, so the agent's session never waits on the
        kernel; views that arrive while one is being applied are coalesced (only the
        latest counts)."""
        with self._lock:
            self._pending = views
            if self._syncer is None:
                self._syncer = threading.Thread(target=self._sync_loop, name="overlay-sync")
                self._syncer.daemon = True
                self._syncer.start()
        self._wake.set()

    def _sync_loop(self) -> None:
        while not self._closing.is_set():
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                views, self._pending = self._pending, None
                if views is None or self._closing.is_set():
                    continue
                self._views = {v.network.meta.id: v for v in views.networks}
                try:
                    self._reconcile()
                except Exception:  # logged; the next views try again
                    log.exception("applying the overlay network views failed")

    def _reconcile(self) -> None:
        self._reindex()
        for ns, network_id in self._local_networks().items():
            self._sync_peers(ns, network_id)
        for container_id in list(self._containers):
            self._sync_vips(container_id)
        self._sync_ingress()
        self._remove_unused_networks()

    # -- networks on this node ---------------------------------------------------------

    def _require_local(self) -> IPv4Address:
        if self._local_addr is None:
            raise errors.Unavailable("overlay networks need the node to be in a swarm")
        return self._local_addr

    def _ns(self, vni: int) -> str:
        return f"{self.prefix}ov{vni}"

    def _mtu(self, requested: int, local_addr: IPv4Address) -> int:
        return requested or vxlan.underlay_mtu(local_addr) - VXLAN_OVERHEAD

    def _ensure_network(
        self,
        overlay: engine_pb2.OverlayAttachment,
        local_addr: IPv4Address,
        *,
        bridge_address: IPv4Interface | None = None,
    ) -> Local:
        ns = self._ns(overlay.vni)
        owner = self._local_networks().get(ns)
        if owner is not None and owner != overlay.network_id:
            # Two networks with one VNI (a restored or hand-edited state): joining both
            # would bridge them together.
            raise errors.Conflict(
                f"VNI {overlay.vni} of network {overlay.network_name or overlay.network_id} "
                f"is already used here by network {owner}"
            )
        mtu = self._mtu(overlay.mtu, local_addr)
        if bridge_address is None and overlay.ingress:
            bridge_address = self._ingress_address()
        vxlan.ensure_network(
            ns, vni=overlay.vni, local=local_addr, mtu=mtu, bridge_address=bridge_address
        )
        if not self._tunnel_untracked:
            lb.apply(lb.plan_untracked_tunnel(vxlan.VXLAN_PORT), netns=None)
            self._tunnel_untracked = True
        self._peers.pop(ns, None)  # (re)made: program its peers again
        return Local(overlay.network_id, overlay.vni, ns, "", overlay.address, mtu)

    def _local_networks(self) -> dict[str, str]:
        """ns -> network id of every overlay namespace in use here."""
        found = {
            local.ns: local.network_id for locals_ in self._containers.values() for local in locals_
        }
        ingress = self._ingress_view()
        if self._ingress is not None and ingress is not None:
            found[self._ns(ingress.network.vni)] = ingress.network.meta.id
        return found

    def _sync_peers(self, ns: str, network_id: str) -> None:
        view = self._views.get(network_id)
        if view is None:
            return  # not known yet: keep what is there until the leader says
        peers = frozenset(
            vxlan.Peer(
                ip=IPv4Address(ep.address),
                mac=vxlan.mac_for(IPv4Address(ep.address)),
                vtep=IPv4Address(ep.node_addr),
            )
            for ep in view.endpoints
            if ep.address and ep.node_addr and IPv4Address(ep.node_addr) != self._local_addr
        )
        if self._peers.get(ns) == peers:
            return
        try:
            vxlan.set_peers(ns, sorted(peers))
            self._peers[ns] = peers
        except errors.EngineFailure as exc:
            log.warning("peers of %s not programmed: %s", ns, exc)

    def _remove_unused_networks(self, *, sweep: bool = False) -> None:
        used = set(self._local_networks())
        names = list(self._peers)
        if sweep:
            pattern = re.compile(re.escape(self.prefix) + r"ov\d+")
            names += [n for n in netns.list_netns() if pattern.fullmatch(n)]
        for ns in names:
            if ns not in used:
                try:
                    vxlan.remove_network(ns)
                except errors.EngineFailure as exc:
                    log.warning("overlay namespace %s not removed: %s", ns, exc)
                    continue
                self._peers.pop(ns, None)
        if not used and (self._tunnel_untracked or sweep):
            try:
                lb.delete_table(lb.TUNNEL_TABLE, netns=None)
                self._tunnel_untracked = False
            except errors.EngineFailure as exc:
                log.warning("VXLAN notrack table not removed: %s", exc)

    # -- DNS and VIPs ------------------------------------------------------------------

    def _reindex(self) -> None:
        """From the views, once per change: names per network for the DNS thread
        (services: VIP or, in dnsrr mode, ready task addresses; `tasks.<service>`;
        aliases; task and container names) and the VIPs with their backends."""
        names: dict[str, dict[str, list[IPv4Address]]] = {}
        vips: dict[str, list[lb.Vip]] = {}
        for network_id, view in self._views.items():
            if view.network.spec.ingress:
                continue
            ready = _ready(view)
            table: dict[str, list[IPv4Address]] = {}
            for ep in view.endpoints:
                if ep.ready and ep.address:
                    for name in (ep.name, *ep.aliases):
                        if name:
                            table.setdefault(name.lower(), []).append(IPv4Address(ep.address))
            vips[network_id] = []
            for service in view.services:
                backends = ready.get(service.service_id, [])
                if service.mode != "dnsrr" and service.vip:
                    vip = IPv4Address(service.vip)
                    vips[network_id].append(lb.Vip(vip, tuple(backends)))
                    addresses = [vip]
                else:
                    addresses = backends
                for name in (service.name, *service.aliases):
                    table[name.lower()] = list(addresses)
                table[f"tasks.{service.name.lower()}"] = backends
            names[network_id] = table
        self._names = names
        self._vips = vips

    def _lookup(self, container_id: str, name: str) -> list[IPv4Address] | None:
        locals_ = self._containers.get(container_id, [])
        names = self._names
        for local in locals_:
            found = names.get(local.network_id, {}).get(name)
            if found is not None:
                return found
        return None

    def _sync_vips(self, container_id: str) -> None:
        vips = {
            vip.address: vip
            for local in self._containers.get(container_id, [])
            for vip in self._vips.get(local.network_id, [])
        }
        script = lb.plan_vips(list(vips.values()))
        if self._lb.get(container_id) == script:
            return
        try:
            lb.apply(script, netns=self.bridge.netns_name(container_id))
            self._lb[container_id] = script
        except errors.EngineFailure as exc:
            log.warning("VIPs of container %s not programmed: %s", container_id[:12], exc)

    # -- the routing mesh ----------------------------------------------------------------

    def _ingress_view(self) -> swarm.NetworkView | None:
        return next((v for v in self._views.values() if v.network.spec.ingress), None)

    def _ingress_address(self) -> IPv4Interface | None:
        view = self._ingress_view()
        if view is None:
            return None
        prefix = IPv4Interface(view.network.subnet).network.prefixlen
        for ep in view.endpoints:
            if ep.id == self._node_id and ep.address:
                return IPv4Interface(f"{ep.address}/{prefix}")
        return None

    def _sync_ingress(self) -> None:
        view = self._ingress_view()
        ports = _ingress_ports(view) if view is not None else []
        address = self._ingress_address()
        if not ports or address is None or self._local_addr is None or view is None:
            if self._ingress is not None:
                self._teardown_ingress()
            return
        ns = self._ns(view.network.vni)
        try:
            if self._ingress is None:
                overlay = engine_pb2.OverlayAttachment(
                    network_id=view.network.meta.id, vni=view.network.vni, ingress=True
                )
                self._ensure_network(overlay, self._local_addr, bridge_address=address)
                vxlan.connect_host(
                    ns,
                    host_ifname=INGRESS_HOST_IFNAME,
                    host_address=INGRESS_HOST_ADDR,
                    ns_ifname=INGRESS_NS_IFNAME,
                    ns_address=INGRESS_NS_ADDR,
                )
                self._ingress = ("", "")
                self._sync_peers(ns, view.network.meta.id)
            host = lb.plan_ingress_host(ports, to=INGRESS_NS_ADDR.ip, ifname=INGRESS_HOST_IFNAME)
            sandbox = lb.plan_ingress_sandbox(ports)
            if self._ingress != (host, sandbox):
                lb.apply(sandbox, netns=ns)
                lb.apply(host, netns=None)
                self._ingress = (host, sandbox)
        except errors.PyswarmError as exc:
            log.warning("routing mesh not programmed: %s", exc)

    def _teardown_ingress(self) -> None:
        self._ingress = None
        try:
            lb.delete_table(lb.INGRESS_TABLE, netns=None)
        except errors.EngineFailure as exc:
            log.warning("routing mesh teardown: %s", exc)
        try:
            vxlan.disconnect_host(INGRESS_HOST_IFNAME)
        except errors.EngineFailure as exc:
            log.warning("routing mesh teardown: %s", exc)

    # -- state ---------------------------------------------------------------------------

    def _save(self) -> None:
        data = {
            "version": 1,
            "containers": {
                cid: [asdict(local) for local in locals_]
                for cid, locals_ in sorted(self._containers.items())
            },
        }
        self._state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, self._state_path)


def _ready(view: swarm.NetworkView) -> dict[str, list[IPv4Address]]:
    """The addresses of each service's ready tasks on the network: its backends."""
    ready: dict[str, list[IPv4Address]] = {}
    for ep in view.endpoints:
        if ep.ready and ep.address:
            ready.setdefault(ep.service_id, []).append(IPv4Address(ep.address))
    return ready


def _ingress_ports(view: swarm.NetworkView) -> list[lb.IngressPort]:
    ready = _ready(view)
    return [
        lb.IngressPort(
            protocol=port.protocol or "tcp",
            published=port.published_port,
            target=port.target_port,
            backends=tuple(ready.get(service.service_id, [])),
        )
        for service in view.services
        for port in service.ports
    ]


def _load(path: Path) -> dict[str, list[Local]]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable overlay state %s: %s", path, exc)
        return {}
    return {
        cid: [Local(**entry) for entry in entries]
        for cid, entries in data.get("containers", {}).items()
    }

"""Overlay network facts every side reads the same way (managers, agents, drivers)."""

from __future__ import annotations

from collections.abc import Iterable

from api import engine_pb2
from api import objects_pb2 as objects

MTU_OPTIONS = ("mtu", "com.docker.network.driver.mtu")


def ingress_ports(ports: Iterable[objects.PortConfig]) -> list[objects.PortConfig]:
    """The ports published through the routing mesh ("" means ingress, docker's default)."""
    return [p for p in ports if p.publish_mode in ("", "ingress")]


def network_mtu(network: objects.Network) -> int:
    """The MTU the user set (`-o mtu=N`), or 0 for the default (the underlay's - 50)."""
    for key in MTU_OPTIONS:
        value = network.spec.options.get(key, "")
        if value.isascii() and value.isdigit():
            return int(value)
    return 0


def overlay_attachment(attachment: objects.NetworkAttachment) -> engine_pb2.OverlayAttachment:
    """An allocated attachment as the engine's network driver needs it: the address
    and the network's VNI, subnet and MTU."""
    network = attachment.network
    return engine_pb2.OverlayAttachment(
        network_id=network.meta.id,
        network_name=network.spec.name,
        vni=network.vni,
        subnet=network.subnet,
        address=attachment.addresses[0] if attachment.addresses else "",
        mtu=network_mtu(network),
        ingress=network.spec.ingress,
        aliases=list(attachment.aliases),
        internal=network.spec.internal,
    )

"""What this host tells the swarm about itself: its description and the address it
advertises when the operator gives none (docker's rule: the one address there is)."""

from __future__ import annotations

import os
import platform
import socket

from api import objects_pb2 as objects
from api.errors import InvalidArgument


def node_description(hostname: str) -> objects.NodeDescription:
    from importlib.metadata import version

    memory = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
    machine = platform.machine()
    return objects.NodeDescription(
        hostname=hostname,
        os="linux",
        arch={"x86_64": "x86_64", "aarch64": "aarch64"}.get(machine, machine),
        nano_cpus=(os.cpu_count() or 1) * 10**9,
        memory_bytes=memory,
        engine_version=version("pyswarm"),
    )


def default_advertise_host() -> str:
    """The one non-loopback IPv4 address of this host (docker's rule, simplified)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        addrs = [
            (names.get(a["index"], "?"), a.get_attr("IFA_ADDRESS"))
            for a in ipr.get_addr(family=socket.AF_INET)
        ]
    candidates = [
        (name, ip) for name, ip in addrs if not ip.startswith("127.") and name != "pyswarm0"
    ]
    if len(candidates) == 1:
        return str(candidates[0][1])
    if not candidates:
        raise InvalidArgument("could not find an IP address to advertise: use --advertise-addr")
    listed = ", ".join(f"{ip} on {name}" for name, ip in candidates)
    raise InvalidArgument(
        f"could not choose an IP address to advertise since this system has multiple "
        f"addresses ({listed}): use --advertise-addr"
    )

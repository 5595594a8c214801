"""VIP load balancing and the ingress routing mesh against the real kernel.

A lab of network namespaces, all named `pstest-lb-<hex>-<role>`, made by the test and
removed at the end by name (httpd processes ended by PID), even when a test fails:

    outside (10.98.0.2) --veth-- node (10.98.0.1; 169.254.230.1) --veth-- sandbox
                                                                          (169.254.230.2,
                                                                           br0 10.99.0.10)
    br0 in the sandbox: b1 10.99.0.2, b2 .3, b3 .4 (busybox httpd :80, index.html = its
    name) and client .5.  VIP 10.99.0.100 is owned by no one.

Traffic runs only between these namespaces and their loopback. Requires root, nsenter,
ip, nft and busybox.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from api import errors
from overlay import lb
from overlay import netns as ns

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.geteuid() != 0 or not all(shutil.which(t) for t in ("nsenter", "busybox", "nft", "ip")),
        reason="needs root, nsenter, busybox, nft and ip",
    ),
]

PREFIX = "pstest-lb-"
BACKENDS = {"b1": "10.99.0.2", "b2": "10.99.0.3", "b3": "10.99.0.4"}
CLIENT_IP = "10.99.0.5"
SANDBOX_IP = "10.99.0.10"
VIP = IPv4Address("10.99.0.100")
NODE_VETH_IP, SANDBOX_VETH_IP = "169.254.230.1", "169.254.230.2"
NODE_IP, OUTSIDE_IP = "10.98.0.1", "10.98.0.2"
NODE_TO_SANDBOX = "vsbx"  # the node's end of the node<->sandbox veth
REQUESTS = 30
UDP_PORT = 5000
UDP_SERVER = f"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", {UDP_PORT}))
s.settimeout(1)
end = time.monotonic() + 120
while time.monotonic() < end:
    try:
        _, peer = s.recvfrom(100)
    except TimeoutError:
        continue
    s.sendto(sys.argv[1].encode(), peer)
"""
UDP_CLIENT = f"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.connect((sys.argv[1], {UDP_PORT}))
try:
    s.send(b"?")
    print(s.recv(100).decode())
except OSError as exc:
    print(type(exc).__name__)
"""
COMMAND_TIMEOUT = 15.0
READY_TIMEOUT = 10.0


def backend_ips(*names: str) -> tuple[IPv4Address, ...]:
    return tuple(IPv4Address(BACKENDS[name]) for name in names)


@dataclass
class Lab:
    tag: str
    www: Path
    made: list[str] = field(default_factory=list)
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def name(self, role: str) -> str:
        return f"{PREFIX}{self.tag}-{role}"

    def run(self, role: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["nsenter", f"--net={ns.netns_path(self.name(role))}", *args],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=check,
        )

    def ip(self, role: str, *args: str) -> None:
        subprocess.run(
            ["ip", "-n", self.name(role), *args],
            check=True,
            capture_output=True,
            timeout=COMMAND_TIMEOUT,
        )

    def fetch(self, role: str, url: str) -> str:
        """The body, or "" on any failure (busybox wget -T segfaults: bounded by timeout)."""
        done = self.run(role, "timeout", "5", "busybox", "wget", "-q", "-O", "-", url, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    def apply(self, role: str, script: str) -> None:
        lb.apply(script, netns=self.name(role))

    def tables(self, role: str) -> str:
        return self.run(role, "nft", "list", "tables").stdout

    def add(self, role: str) -> None:
        ns.create_netns(self.name(role))
        self.made.append(self.name(role))

    def serve(self, role: str) -> None:
        root = self.www / role
        root.mkdir(parents=True)
        (root / "index.html").write_text(role + "\n")
        self.servers.append(
            subprocess.Popen(
                [
                    "nsenter",
                    f"--net={ns.netns_path(self.name(role))}",
                    "busybox",
                    "httpd",
                    "-f",
                    "-p",
                    "80",
                    "-h",
                    str(root),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    def serve_udp(self, role: str) -> None:
        """A UDP server answering each datagram with the role's name (ends after 120 s)."""
        self.servers.append(
            subprocess.Popen(
                [
                    "nsenter",
                    f"--net={ns.netns_path(self.name(role))}",
                    sys.executable,
                    "-c",
                    UDP_SERVER,
                    role,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    def ask_udp(self, role: str, address: object) -> str:
        """The answer to one datagram from a fresh socket, or the error's name."""
        done = self.run(role, sys.executable, "-c", UDP_CLIENT, str(address), check=False)
        return done.stdout.strip()

    def close(self) -> None:
        for proc in self.servers:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for name in reversed(self.made):
            ns.remove_netns(name)


def _wait_for(predicate: object, *, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def build_lab(tmp: Path) -> Lab:
    lab = Lab(tag=secrets.token_hex(3), www=tmp)
    try:
        _build(lab)
    except BaseException:
        lab.close()
        raise
    return lab


def _build(lab: Lab) -> None:
    for role in ("sandbox", "client", "node", "outside", *BACKENDS):
        lab.add(role)
    sandbox = lab.name("sandbox")
    lab.ip("sandbox", "link", "add", "br0", "type", "bridge")
    lab.ip("sandbox", "addr", "add", f"{SANDBOX_IP}/24", "dev", "br0")
    lab.ip("sandbox", "link", "set", "br0", "up")
    for role, address in [*BACKENDS.items(), ("client", CLIENT_IP)]:
        port = f"v{role}"
        lab.ip(
            "sandbox", "link", "add", port, "type", "veth", "peer", "eth0", "netns", lab.name(role)
        )
        lab.ip("sandbox", "link", "set", port, "master", "br0", "up")
        lab.ip(role, "addr", "add", f"{address}/24", "dev", "eth0")
        lab.ip(role, "link", "set", "eth0", "up")
    # node <-> sandbox, the ingress veth; the sandbox's way back is its default route.
    lab.ip("node", "link", "add", NODE_TO_SANDBOX, "type", "veth", "peer", "eth1", "netns", sandbox)
    lab.ip("node", "addr", "add", f"{NODE_VETH_IP}/30", "dev", NODE_TO_SANDBOX)
    lab.ip("node", "link", "set", NODE_TO_SANDBOX, "up")
    lab.ip("sandbox", "addr", "add", f"{SANDBOX_VETH_IP}/30", "dev", "eth1")
    lab.ip("sandbox", "link", "set", "eth1", "up")
    lab.ip("sandbox", "route", "add", "default", "via", NODE_VETH_IP)
    # outside <-> node.
    lab.ip(
        "node", "link", "add", "vout", "type", "veth", "peer", "eth0", "netns", lab.name("outside")
    )
    lab.ip("node", "addr", "add", f"{NODE_IP}/24", "dev", "vout")
    lab.ip("node", "link", "set", "vout", "up")
    lab.ip("outside", "addr", "add", f"{OUTSIDE_IP}/24", "dev", "eth0")
    lab.ip("outside", "link", "set", "eth0", "up")
    for role, key in [
        ("node", "net.ipv4.ip_forward=1"),
        ("node", f"net.ipv4.conf.{NODE_TO_SANDBOX}.route_localnet=1"),
        ("sandbox", "net.ipv4.ip_forward=1"),
    ]:
        lab.run(role, "sysctl", "-q", "-w", key)
    for role in BACKENDS:
        lab.serve(role)
    for role, address in BACKENDS.items():
        _wait_for(
            lambda r=role, a=address: lab.fetch("client", f"http://{a}/") == r,
            timeout=READY_TIMEOUT,
            what=f"httpd in {role}",
        )


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    made = build_lab(tmp_path_factory.mktemp("www"))
    try:
        yield made
    finally:
        made.close()
        assert not [n for n in ns.list_netns() if n.startswith(PREFIX + made.tag)]


def _spread(lab: Lab, role: str, url: str, count: int = REQUESTS) -> Counter[str]:
    return Counter(lab.fetch(role, url) for _ in range(count))


def test_vip_spreads_over_backends_then_follows_changes(lab: Lab) -> None:
    try:
        lab.apply("client", lb.plan_vips([lb.Vip(VIP, backend_ips("b1", "b2", "b3"))]))
        seen = _spread(lab, "client", f"http://{VIP}/")
        assert set(seen) == set(BACKENDS), seen  # round-robin: all three, nothing failed
        assert min(seen.values()) >= REQUESTS // 3 - 1

        lab.apply("client", lb.plan_vips([lb.Vip(VIP, backend_ips("b2"))]))
        assert _spread(lab, "client", f"http://{VIP}/") == Counter({"b2": REQUESTS})

        lab.apply("client", lb.plan_vips([lb.Vip(VIP, ())]))
        started = time.monotonic()
        done = lab.run(
            "client", "timeout", "5", "busybox", "wget", "-q", "-O-", f"http://{VIP}/", check=False
        )
        elapsed = time.monotonic() - started
        assert done.returncode != 0
        assert elapsed < 1.0, f"refusal took {elapsed:.2f}s"
        assert "refused" in done.stderr.lower(), done.stderr
        # Backends are still reachable directly: only the VIP is refused.
        assert lab.fetch("client", f"http://{BACKENDS['b1']}/") == "b1"
    finally:
        lb.delete_table(lb.VIP_TABLE, netns=lab.name("client"))
    assert "pyswarm-lb" not in lab.tables("client")
    lb.delete_table(lb.VIP_TABLE, netns=lab.name("client"))  # idempotent
    assert lab.fetch("client", f"http://{VIP}/") == ""  # nobody owns the VIP


def test_vip_balances_udp_and_refuses_it_without_backends(lab: Lab) -> None:
    for role in BACKENDS:
        lab.serve_udp(role)
    for role, address in BACKENDS.items():
        _wait_for(
            lambda r=role, a=address: lab.ask_udp("client", a) == r,
            timeout=READY_TIMEOUT,
            what=f"udp server in {role}",
        )
    try:
        lab.apply("client", lb.plan_vips([lb.Vip(VIP, backend_ips("b1", "b2", "b3"))]))
        seen = Counter(lab.ask_udp("client", VIP) for _ in range(9))
        assert seen == Counter({"b1": 3, "b2": 3, "b3": 3}), seen
        lab.apply("client", lb.plan_vips([lb.Vip(VIP, ())]))
        started = time.monotonic()
        # The datagram is dropped in the sender's own output hook: send() fails at once
        # (EPERM), where a remote reject would have come back as ECONNREFUSED.
        assert lab.ask_udp("client", VIP) in ("PermissionError", "ConnectionRefusedError")
        assert time.monotonic() - started < 1.5  # an interpreter start-up, no timeout
    finally:
        lb.delete_table(lb.VIP_TABLE, netns=lab.name("client"))


def test_broken_script_leaves_previous_table(lab: Lab) -> None:
    client = lab.name("client")
    try:
        lab.apply("client", lb.plan_vips([lb.Vip(VIP, backend_ips("b3"))]))
        before = lab.run("client", "nft", "list", "table", "ip", lb.VIP_TABLE).stdout
        broken = lb.plan_vips([lb.Vip(VIP, backend_ips("b1"))]).replace("dnat to", "dnat too")
        with pytest.raises(errors.EngineFailure, match=r"nft failed in .*syntax"):
            lb.apply(broken, netns=client)
        assert lab.run("client", "nft", "list", "table", "ip", lb.VIP_TABLE).stdout == before
        assert lab.fetch("client", f"http://{VIP}/") == "b3"
    finally:
        lb.delete_table(lb.VIP_TABLE, netns=client)


def test_apply_in_missing_namespace_fails() -> None:
    with pytest.raises(errors.EngineFailure, match="nft failed in"):
        lb.apply(lb.plan_vips([]), netns=f"{PREFIX}absent-{secrets.token_hex(3)}")


def test_ingress_routing_mesh(lab: Lab) -> None:
    ports = [lb.IngressPort("tcp", 8080, 80, backend_ips("b1", "b2", "b3"))]
    empty = [lb.IngressPort("tcp", 8081, 80, ())]
    try:
        lab.apply(
            "node",
            lb.plan_ingress_host(
                [*ports, *empty], to=IPv4Address(SANDBOX_VETH_IP), ifname=NODE_TO_SANDBOX
            ),
        )
        lab.apply("sandbox", lb.plan_ingress_sandbox([*ports, *empty], bridge="br0"))

        seen = _spread(lab, "outside", f"http://{NODE_IP}:8080/")
        assert set(seen) == set(BACKENDS), seen
        local = _spread(lab, "node", "http://127.0.0.1:8080/", count=6)
        assert set(local) <= set(BACKENDS) and len(local) >= 2, local
        # The node's own addresses answer too, from the node itself.
        assert lab.fetch("node", f"http://{NODE_VETH_IP}:8080/") in BACKENDS

        started = time.monotonic()
        assert lab.fetch("outside", f"http://{NODE_IP}:8081/") == ""
        assert time.monotonic() - started < 1.0

        # One backend left: everything goes there.
        lab.apply(
            "sandbox", lb.plan_ingress_sandbox([lb.IngressPort("tcp", 8080, 80, backend_ips("b1"))])
        )
        assert _spread(lab, "outside", f"http://{NODE_IP}:8080/", count=6) == Counter({"b1": 6})
    finally:
        lb.delete_table(lb.INGRESS_TABLE, netns=lab.name("node"))
        lb.delete_table(lb.INGRESS_TABLE, netns=lab.name("sandbox"))
    assert "pyswarm-ingress" not in lab.tables("node")
    assert "pyswarm-ingress" not in lab.tables("sandbox")
    assert lab.fetch("outside", f"http://{NODE_IP}:8080/") == ""

"""The embedded DNS server against the real kernel, in namespaces the test makes.

Namespaces are named `pstest-dns-<hex>` and removed at the end, even on failure. The
server runs in this test process (its serving thread in the test's own namespace, or in
an isolated namespace for the offline case); clients query 127.0.0.11 from inside the
task namespaces, with busybox nslookup under nsenter and with Python sockets from a
thread that entered the namespace. The fake upstream listens on this process's
127.0.0.1; no traffic goes anywhere else (198.18.255.1 is only ever "sent" from a
namespace with no route to it).

Requires root, nsenter and busybox.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address
from typing import Any, TypeVar

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from api import errors
from overlay import netns
from overlay.dns import EmbeddedDns

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.geteuid() != 0 or not all(shutil.which(t) for t in ("nsenter", "busybox")),
        reason="needs root, nsenter and busybox",
    ),
]

PREFIX = "pstest-dns-"
T = TypeVar("T")
Data = dict[str, dict[str, list[IPv4Address]]]


def in_ns(ns: str, fn: Callable[[], T]) -> T:
    def run() -> T:
        netns._enter(ns)
        return fn()

    return netns._in_thread(run)


def udp_query(
    ns: str, name: str, qtype: str = "A", *, timeout: float = 3.0, packet: bytes | None = None
) -> DNSRecord:
    q = DNSRecord.question(name, qtype)
    data = bytes(q.pack()) if packet is None else packet

    def run() -> bytes:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.connect(("127.0.0.11", 53))
            s.send(data)
            return s.recv(65535)

    reply = DNSRecord.parse(in_ns(ns, run))
    if packet is None:
        assert reply.header.id == q.header.id
    return reply


def tcp_exchange(
    ns: str, chunks: list[bytes], replies: int, *, timeout: float = 3.0
) -> list[bytes]:
    """Send the chunks (with short pauses, so the server sees partial messages), then
    read `replies` length-prefixed messages."""

    def run() -> list[bytes]:
        with socket.create_connection(("127.0.0.11", 53), timeout=timeout) as s:
            for chunk in chunks:
                s.sendall(chunk)
                time.sleep(0.01)  # forces separate reads on the server side
            buf = b""
            out: list[bytes] = []
            while len(out) < replies:
                while len(buf) >= 2 and len(buf) >= 2 + int.from_bytes(buf[:2], "big"):
                    size = int.from_bytes(buf[:2], "big")
                    out.append(buf[2 : 2 + size])
                    buf = buf[2 + size :]
                if len(out) >= replies:
                    break
                data = s.recv(65535)
                if not data:
                    raise ConnectionResetError("closed by the server")
                buf += data
            return out

    return in_ns(ns, run)


def framed(q: DNSRecord) -> bytes:
    packed = bytes(q.pack())
    return len(packed).to_bytes(2, "big") + packed


def addresses(reply: DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


@pytest.fixture
def make_ns() -> Iterator[Callable[..., str]]:
    made: list[str] = []

    def make(*, lo_up: bool = True) -> str:
        name = PREFIX + secrets.token_hex(4)
        made.append(name)
        netns.create_netns(name, lo_up=lo_up)
        return name

    try:
        yield make
    finally:
        for name in made:
            netns.remove_netns(name)
        assert not [n for n in made if n in netns.list_netns()]


@pytest.fixture
def data() -> Data:
    return {
        "task-a": {"web": [IPv4Address("10.0.1.2"), IPv4Address("10.0.1.3")], "idle": []},
        "task-b": {"web": [IPv4Address("10.0.2.9")]},
    }


@pytest.fixture
def make_dns(data: Data) -> Iterator[Callable[..., EmbeddedDns]]:
    made: list[EmbeddedDns] = []

    def lookup(key: str, name: str) -> list[IPv4Address] | None:
        if name == "boom":
            raise RuntimeError("lookup failed")
        return data.get(key, {}).get(name)

    def make(**kwargs: Any) -> EmbeddedDns:
        kwargs.setdefault("upstreams", [])
        dns = EmbeddedDns(lookup, **kwargs)
        made.append(dns)
        return dns

    try:
        yield make
    finally:
        for dns in made:
            dns.close()


class FakeUpstream:
    """A dnslib responder on this process's 127.0.0.1: `<anything>` A 192.0.2.7."""

    def __init__(self, *, silent: bool = False) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.silent = silent
        self.ids: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 60
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                packet, client = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            q = DNSRecord.parse(packet)
            self.ids.append(q.header.id)
            if self.silent:
                continue
            reply = q.reply()
            reply.add_answer(RR(q.q.qname, QTYPE.A, rdata=A("192.0.2.7"), ttl=30))
            self.sock.sendto(reply.pack(), client)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def upstreams() -> Iterator[Callable[..., FakeUpstream]]:
    made: list[FakeUpstream] = []

    def make(**kwargs: Any) -> FakeUpstream:
        up = FakeUpstream(**kwargs)
        made.append(up)
        return up

    try:
        yield make
    finally:
        for up in made:
            up.close()


# -- tests ---------------------------------------------------------------------------------


def test_each_key_gets_its_own_answers(make_ns, make_dns) -> None:
    ns_a, ns_b = make_ns(lo_up=False), make_ns()
    dns = make_dns()
    dns.serve("task-a", ns_a)
    dns.serve("task-b", ns_b)
    dns.serve("task-a", ns_a)  # idempotent
    assert dns.keys() == ["task-a", "task-b"]

    assert addresses(udp_query(ns_a, "web")) == ["10.0.1.2", "10.0.1.3"]
    assert addresses(udp_query(ns_b, "WEB.")) == ["10.0.2.9"]
    out = subprocess.run(
        ["nsenter", f"--net=/run/netns/{ns_b}", "busybox", "nslookup", "web", "127.0.0.11"],
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "10.0.2.9" in out.stdout and "10.0.1.2" not in out.stdout

    aaaa = udp_query(ns_a, "web", "AAAA")
    assert aaaa.header.rcode == RCODE.NOERROR and aaaa.rr == []
    idle = udp_query(ns_a, "idle")
    assert idle.header.rcode == RCODE.NOERROR and idle.rr == []
    assert udp_query(ns_a, "boom").header.rcode == RCODE.SERVFAIL
    # No upstream configured: a foreign name fails at once.
    assert udp_query(ns_a, "example.com").header.rcode == RCODE.SERVFAIL


def test_answers_follow_the_data_immediately(make_ns, make_dns, data) -> None:
    ns = make_ns()
    dns = make_dns(ttl=5)
    dns.serve("task-a", ns)
    first = udp_query(ns, "web")
    assert addresses(first) == ["10.0.1.2", "10.0.1.3"] and first.rr[0].ttl == 5
    data["task-a"]["web"] = [IPv4Address("10.0.1.7")]
    assert addresses(udp_query(ns, "web")) == ["10.0.1.7"]
    data["task-a"]["web"] = []
    assert udp_query(ns, "web").rr == []


def test_tcp_several_queries_and_partial_reads(make_ns, make_dns) -> None:
    ns = make_ns()
    dns = make_dns()
    dns.serve("task-b", ns)
    queries = [DNSRecord.question("web"), DNSRecord.question("web", "AAAA")]
    queries.append(DNSRecord.question("idle"))
    stream = b"".join(framed(q) for q in queries)
    # One byte, then a split inside the second message's length prefix, then the rest.
    chunks = [
        stream[:1],
        stream[1 : len(framed(queries[0])) + 1],
        stream[len(framed(queries[0])) + 1 :],
    ]
    replies = [DNSRecord.parse(r) for r in tcp_exchange(ns, chunks, 3)]
    assert [r.header.id for r in replies] == [q.header.id for q in queries]
    assert addresses(replies[0]) == ["10.0.2.9"]
    assert replies[1].rr == [] and replies[1].header.rcode == RCODE.NOERROR
    assert replies[2].rr == []  # task-b has no `idle`: forwarded, and no upstream
    assert replies[2].header.rcode == RCODE.SERVFAIL


def test_malformed_input_does_not_stop_the_server(make_ns, make_dns) -> None:
    ns = make_ns()
    dns = make_dns()
    dns.serve("task-b", ns)
    with pytest.raises(TimeoutError):
        udp_query(ns, "x", packet=b"\x01\x02garbage", timeout=0.3)
    with pytest.raises(ConnectionResetError):
        tcp_exchange(ns, [b"\x00\x08garbage!"], 1)
    with pytest.raises(ConnectionResetError):
        tcp_exchange(ns, [b"\x00\x00"], 1)
    assert addresses(udp_query(ns, "web")) == ["10.0.2.9"]
    assert addresses(DNSRecord.parse(tcp_exchange(ns, [framed(DNSRecord.question("web"))], 1)[0]))


def test_idle_tcp_connections_are_closed(make_ns, make_dns) -> None:
    ns = make_ns()
    dns = make_dns(tcp_idle_timeout=0.3)
    dns.serve("task-b", ns)

    def idle_client() -> float:
        with socket.create_connection(("127.0.0.11", 53), timeout=5) as s:
            start = time.monotonic()
            assert s.recv(10) == b""
            return time.monotonic() - start

    assert in_ns(ns, idle_client) < 3.0


def test_forwarding_relays_the_upstream_answer(make_ns, make_dns, upstreams) -> None:
    up = upstreams()
    ns = make_ns()
    dns = make_dns(upstreams=[f"127.0.0.1:{up.port}"])
    dns.serve("task-a", ns)
    q = DNSRecord.question("example.test")
    reply = DNSRecord.parse(in_ns(ns, lambda: _raw_udp(q)))
    assert reply.header.id == q.header.id
    assert addresses(reply) == ["192.0.2.7"] and reply.rr[0].ttl == 30
    assert len(up.ids) == 1  # the upstream saw it once, under a fresh id (2^-16 to collide)
    over_tcp = DNSRecord.parse(tcp_exchange(ns, [framed(DNSRecord.question("other.test"))], 1)[0])
    assert addresses(over_tcp) == ["192.0.2.7"]
    # A swarm name is never forwarded, even AAAA.
    udp_query(ns, "web", "AAAA")
    assert len(up.ids) == 2


def _raw_udp(q: DNSRecord) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(bytes(q.pack()), ("127.0.0.11", 53))
        return s.recv(65535)


def test_forwarding_moves_on_from_a_silent_upstream_and_times_out(
    make_ns, make_dns, upstreams
) -> None:
    silent, good = upstreams(silent=True), upstreams()
    ns = make_ns()
    dns = make_dns(
        upstreams=[f"127.0.0.1:{silent.port}", f"127.0.0.1:{good.port}"], forward_timeout=0.4
    )
    dns.serve("task-a", ns)
    start = time.monotonic()
    assert addresses(udp_query(ns, "example.test")) == ["192.0.2.7"]
    assert 0.15 < time.monotonic() - start < 1.0
    assert len(silent.ids) == 1 and len(good.ids) == 1

    only_silent = make_dns(upstreams=[f"127.0.0.1:{silent.port}"], forward_timeout=0.3)
    ns2 = make_ns()
    only_silent.serve("task-a", ns2)
    start = time.monotonic()
    assert udp_query(ns2, "example.test").header.rcode == RCODE.SERVFAIL
    assert 0.25 < time.monotonic() - start < 1.0


def test_offline_forwarding_fails_fast(make_ns, make_dns) -> None:
    """The server's own namespace has only lo: the send fails with ENETUNREACH."""
    isolated, ns = make_ns(), make_ns()
    dns = in_ns(isolated, lambda: make_dns(upstreams=["198.18.255.1"]))
    dns.serve("task-a", ns)
    udp_query(ns, "web")  # warm up
    start = time.monotonic()
    reply = udp_query(ns, "example.com")
    elapsed = time.monotonic() - start
    assert reply.header.rcode == RCODE.SERVFAIL
    assert elapsed < 0.1, f"{elapsed * 1000:.1f} ms"


def test_stop_serving_closes_the_port(make_ns, make_dns) -> None:
    ns = make_ns()
    dns = make_dns()
    dns.serve("task-a", ns)
    assert addresses(udp_query(ns, "web"))
    dns.stop_serving("task-a")
    dns.stop_serving("task-a")
    dns.stop_serving("never-served")
    assert dns.keys() == []
    with pytest.raises((ConnectionRefusedError, TimeoutError)):
        udp_query(ns, "web", timeout=0.5)
    with pytest.raises(ConnectionRefusedError):
        tcp_exchange(ns, [], 0)
    dns.serve("task-a", ns)  # and it can come back
    assert addresses(udp_query(ns, "web")) == ["10.0.1.2", "10.0.1.3"]


def test_serve_failures_leave_nothing_open(make_ns, make_dns) -> None:
    ns = make_ns()
    dns = make_dns()
    with pytest.raises(errors.EngineFailure):
        dns.serve("task-a", PREFIX + "missing")

    squatter = in_ns(ns, lambda: _bound_udp(("127.0.0.11", 53)))
    try:
        with pytest.raises(errors.EngineFailure, match="in use"):
            dns.serve("task-a", ns)
    finally:
        squatter.close()
    assert dns.keys() == []
    with pytest.raises(ConnectionRefusedError):  # the TCP socket was not left listening
        tcp_exchange(ns, [], 0)


def _bound_udp(address: tuple[str, int]) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(address)
    return s


def test_close_stops_the_thread_and_every_socket(make_ns, make_dns) -> None:
    ns_a, ns_b = make_ns(), make_ns()
    dns = make_dns()
    dns.serve("task-a", ns_a)
    dns.serve("task-b", ns_b)
    assert any(t.name == "embedded-dns" and t.is_alive() for t in threading.enumerate())
    dns.close()
    dns.close()
    assert not any(t.name == "embedded-dns" and t.is_alive() for t in threading.enumerate())
    for ns in (ns_a, ns_b):
        with pytest.raises(ConnectionRefusedError):
            tcp_exchange(ns, [], 0)
    with pytest.raises(errors.EngineFailure):
        dns.serve("task-a", ns_a)


def test_many_namespaces_share_one_thread(make_ns, make_dns, data) -> None:
    names = [make_ns() for _ in range(30)]
    for i in range(len(names)):
        data[f"task-{i}"] = {"web": [IPv4Address(f"10.0.3.{i + 1}")]}
    dns = make_dns()
    before = threading.active_count()
    for i, ns in enumerate(names):
        dns.serve(f"task-{i}", ns)
    assert threading.active_count() == before
    for i, ns in enumerate(names):
        assert addresses(udp_query(ns, "web")) == [f"10.0.3.{i + 1}"]
    for i in range(0, len(names), 2):
        dns.stop_serving(f"task-{i}")
    assert len(dns.keys()) == len(names) // 2
    assert addresses(udp_query(names[1], "web")) == ["10.0.3.2"]

"""Embedded DNS benchmark (`make bench`): A lookups of a swarm name from a task namespace.

A client thread inside a test namespace (`pstest-dns-<hex>`) sends sequential UDP
queries to 127.0.0.11:53 for ~3 s (at most 50 000), measuring each round trip; the
baseline is a trivial raw UDP echo server (recvfrom/sendto, no DNS) in the same process
and the same namespace, measured the same way with the same bytes. The difference is
the cost of the server: selector loop, dnslib parse, lookup, reply packing.
Target: p99 < 2 ms. Printed, not asserted: speed is measured here, not tested.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address

import pytest
from dnslib import DNSRecord

from overlay import netns
from overlay.dns import EmbeddedDns

pytestmark = [
    pytest.mark.bench,
    pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("nsenter"), reason="needs root and nsenter"
    ),
]
SECONDS = 3.0
MAX_QUERIES = 50_000
ECHO = ("127.0.0.12", 5353)


def _in_ns(ns: str, fn: Callable[[], object]) -> object:
    def run() -> object:
        netns._enter(ns)
        return fn()

    return netns._in_thread(run)


def _measure(address: tuple[str, int], packet: bytes) -> list[float]:
    """Sequential round trips for SECONDS (bounded count); seconds per query."""
    samples: list[float] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.connect(address)
        for _ in range(200):  # warm-up
            s.send(packet)
            s.recv(65535)
        end = time.perf_counter() + SECONDS
        while len(samples) < MAX_QUERIES:
            t = time.perf_counter()
            if t >= end:
                break
            s.send(packet)
            reply = s.recv(65535)
            samples.append(time.perf_counter() - t)
            assert reply[:2] == packet[:2]
    return samples


def _echo_server(sock: socket.socket, stop: threading.Event) -> None:
    deadline = time.monotonic() + 60
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            data, client = sock.recvfrom(65535)
        except TimeoutError:
            continue
        sock.sendto(data, client)


@pytest.fixture
def bench_ns() -> Iterator[str]:
    name = "pstest-dns-" + secrets.token_hex(4)
    netns.create_netns(name)
    try:
        yield name
    finally:
        netns.remove_netns(name)
        assert name not in netns.list_netns()


def test_dns_query_latency(bench_ns, capsys):
    addresses = [IPv4Address("10.0.1.2"), IPv4Address("10.0.1.3")]
    dns = EmbeddedDns(lambda key, name: addresses if name == "web" else None, upstreams=[])
    echo_stop = threading.Event()
    echo_sock = _in_ns(bench_ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    assert isinstance(echo_sock, socket.socket)
    echo_thread = threading.Thread(target=_echo_server, args=(echo_sock, echo_stop), daemon=True)
    try:
        dns.serve("bench", bench_ns)
        echo_sock.bind(ECHO)
        echo_sock.settimeout(0.2)
        echo_thread.start()
        packet = bytes(DNSRecord.question("web").pack())
        rows = []
        for label, address in (
            ("raw UDP echo (baseline)", ECHO),
            ("embedded DNS, A web (2 addresses)", ("127.0.0.11", 53)),
        ):
            samples = _in_ns(bench_ns, functools.partial(_measure, address, packet))
            assert isinstance(samples, list)
            rows.append((label, samples))
    finally:
        echo_stop.set()
        if echo_thread.is_alive():
            echo_thread.join(timeout=5)
        echo_sock.close()
        dns.close()

    base = statistics.median(rows[0][1])
    with capsys.disabled():
        print(
            f"\nDNS over UDP from a task namespace, sequential, {SECONDS:g} s each "
            f"(target: embedded DNS p99 < 2 ms)"
        )
        print(f"{'benchmark':40} {'queries/s':>10} {'p50':>9} {'p99':>9} {'p50 vs echo':>12}")
        for label, samples in rows:
            ordered = sorted(samples)
            p50 = statistics.median(ordered)
            p99 = ordered[int(len(ordered) * 0.99)]
            rate = len(samples) / sum(samples)
            print(
                f"{label:40} {rate:10.0f} {p50 * 1000:7.3f}ms {p99 * 1000:7.3f}ms "
                f"{p50 / base:11.2f}x"
            )

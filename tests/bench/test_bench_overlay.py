"""Overlay benchmark (`make bench`): iperf3 TCP throughput over the VXLAN overlay
between two containers on different hosts, against the underlay between the two
hosts directly, in the same run (target: overlay >= 0.8x underlay; Docker's overlay
measured 0.71x on these machines, DESIGN.md).

The lab is the integration tests' (tests/integration/test_vxlan.py): two host
namespaces joined by a veth pair, an overlay network on each with a container on
each. Medians of RUNS runs of SECONDS s each, the two paths alternating, and the
median of the ratios of adjacent runs (which share the machine's load at the time).
Printed, not asserted. The iperf3 servers are started and ended by PID.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator

import pytest

from overlay import vxlan
from tests.integration.test_vxlan import UNDERLAY_B, Lab, make_lab, pair, run_in

pytestmark = [
    pytest.mark.bench,
    pytest.mark.skipif(not shutil.which("iperf3"), reason="needs iperf3"),
]
RUNS = 3
SECONDS = 3
PORT = 5201
READY_TIMEOUT = 5.0


@pytest.fixture
def lab() -> Iterator[Lab]:
    lab = make_lab()
    try:
        yield lab
    finally:
        lab.teardown()
    assert lab.ours() == []


def _server(ns: str) -> subprocess.Popen[bytes]:
    """iperf3 -s in `ns` (nsenter execs it: the PID is the server's), once listening."""
    proc = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{ns}", "iperf3", "-s", "-p", str(PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + READY_TIMEOUT
    while f":{PORT} " not in run_in(ns, "ss", "-Hltn").stdout:
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            raise RuntimeError(f"iperf3 server in {ns} did not start")
        time.sleep(0.02)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _throughput(ns: str, server: str) -> float:
    """Gbit/s received, one iperf3 TCP run from `ns` to `server`."""
    res = run_in(
        ns,
        "iperf3",
        "-c",
        server,
        "-p",
        str(PORT),
        "-t",
        str(SECONDS),
        "-J",
        timeout=SECONDS + 20,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    bps: float = json.loads(res.stdout)["end"]["sum_received"]["bits_per_second"]
    return bps / 1e9


def test_overlay_throughput_vs_underlay(lab: Lab) -> None:
    net_a, net_b, ca, cb, peer_a, peer_b = pair(lab)
    lab.on(lab.host_a, vxlan.set_peers, net_a, [peer_b])
    lab.on(lab.host_b, vxlan.set_peers, net_b, [peer_a])

    overlay: list[float] = []
    underlay: list[float] = []
    servers = [_server(cb), _server(lab.host_b)]
    try:
        for _ in range(RUNS):
            overlay.append(_throughput(ca, str(peer_b.ip)))
            underlay.append(_throughput(lab.host_a, str(UNDERLAY_B.ip)))
    finally:
        for proc in servers:
            _stop(proc)

    over, under = statistics.median(overlay), statistics.median(underlay)
    print(
        f"\n{'iperf3 TCP, median of ' + str(RUNS) + ' x ' + str(SECONDS) + ' s':40} {'Gbit/s':>8}"
    )
    print(f"{'underlay (host ns -> host ns, veth)':40} {under:8.2f}")
    print(f"{'overlay (container -> container, VXLAN)':40} {over:8.2f}")
    print(f"{'ratio overlay/underlay':40} {over / under:8.2f}x  target >= 0.8x (docker 0.71x)")
    paired = statistics.median(o / u for o, u in zip(overlay, underlay, strict=True))
    print(f"{'median of paired ratios (adjacent runs)':40} {paired:8.2f}x")
    print("  overlay runs: " + " ".join(f"{x:.2f}" for x in overlay))
    print("  underlay runs: " + " ".join(f"{x:.2f}" for x in underlay))

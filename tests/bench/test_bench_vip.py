"""VIP benchmark (`make bench`): connections per second through the nftables VIP vs
straight to one backend, on the namespace lab of tests/integration/test_lb.py.

`ab -n 2000 -c 8` (apache2-utils; one connection per request) from the client
namespace against busybox httpd backends: straight to b1's address (baseline), to the
VIP over b1..b3 (DNAT in the client's own output hook), and, for reference, through
the routing mesh (outside -> node -> ingress sandbox -> backends). Median of 3 runs
each, interleaved; the ratio is to the baseline (target: VIP >= 0.9x). Printed, not
asserted.
"""

from __future__ import annotations

import re
import shutil
import statistics
from collections.abc import Iterator
from ipaddress import IPv4Address

import pytest

from overlay import lb, netns
from tests.integration.test_lb import (
    BACKENDS,
    NODE_IP,
    NODE_TO_SANDBOX,
    PREFIX,
    SANDBOX_VETH_IP,
    VIP,
    Lab,
    backend_ips,
    build_lab,
)

pytestmark = [
    pytest.mark.bench,
    pytest.mark.skipif(not shutil.which("ab"), reason="needs ab (apache2-utils)"),
]
RUNS = 3
REQUESTS = 2000
CONCURRENCY = 8
RATE = re.compile(r"^Requests per second:\s+([\d.]+)", re.MULTILINE)
FAILED = re.compile(r"^Failed requests:\s+(\d+)", re.MULTILINE)


@pytest.fixture
def lab(tmp_path) -> Iterator[Lab]:
    made = build_lab(tmp_path)
    try:
        yield made
    finally:
        made.close()
        assert not [n for n in netns.list_netns() if n.startswith(PREFIX + made.tag)]


def _ab(lab: Lab, role: str, url: str) -> float:
    done = lab.run(role, "ab", "-q", "-n", str(REQUESTS), "-c", str(CONCURRENCY), url, check=False)
    assert done.returncode == 0, done.stderr
    failed = FAILED.search(done.stdout)
    assert failed is not None and failed.group(1) == "0", done.stdout
    rate = RATE.search(done.stdout)
    assert rate is not None, done.stdout
    return float(rate.group(1))


def test_vip_connection_rate(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    ports = [lb.IngressPort("tcp", 8080, 80, backend_ips(*BACKENDS))]
    lab.apply("client", lb.plan_vips([lb.Vip(VIP, backend_ips(*BACKENDS))]))
    lab.apply(
        "node",
        lb.plan_ingress_host(ports, to=IPv4Address(SANDBOX_VETH_IP), ifname=NODE_TO_SANDBOX),
    )
    lab.apply("sandbox", lb.plan_ingress_sandbox(ports))
    targets = [
        ("straight to one backend (baseline)", "client", f"http://{BACKENDS['b1']}/"),
        ("via the VIP (3 backends, nft numgen)", "client", f"http://{VIP}/"),
        ("routing mesh (node -> sandbox -> backends)", "outside", f"http://{NODE_IP}:8080/"),
    ]
    samples: dict[str, list[float]] = {name: [] for name, _, _ in targets}
    for _ in range(RUNS):
        for name, role, url in targets:
            samples[name].append(_ab(lab, role, url))
    base = statistics.median(samples[targets[0][0]])
    with capsys.disabled():
        print(
            f"\n{'benchmark (ab -n 2000 -c 8, conn/s)':48} {'median':>9} {'runs':>24} "
            f"{'ratio':>7}  target VIP >= 0.9x"
        )
        for name, _, _ in targets:
            runs = " ".join(f"{x:7.0f}" for x in samples[name])
            med = statistics.median(samples[name])
            print(f"{name:48} {med:9.0f} {runs:>24} {med / base:6.2f}x")

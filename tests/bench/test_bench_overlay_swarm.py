"""Overlay benchmarks on a real swarm (`make bench`): a 1-manager + 1-worker lab, tasks
of real services on an overlay network, measured from inside the tasks' namespaces.

- TCP throughput task → task across the two hosts (iperf3, 3 s, median of 5) vs the
  underlay between the same two hosts (target: overlay >= 0.8x underlay);
- connections/s to a service's VIP (DNAT in the client task's own namespace) vs
  straight to one task's address (`ab -n 2000 -c 8` against busybox httpd, median of
  3; target: VIP >= 0.9x direct).

The host binaries (iperf3, ab) are run in the tasks' network namespaces with
`nsenter --net`; every process is ended by PID. Printed, not asserted.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from api import swarm_pb2 as swarm
from tests.daemons import wait_for
from tests.e2e.test_services import RUNNING, Swarm, lab_swarm

pytestmark = [
    pytest.mark.bench,
    pytest.mark.skipif(
        not (shutil.which("iperf3") and shutil.which("ab")), reason="needs iperf3 and ab"
    ),
]
RUNS = 5
WEB = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"
RATE = re.compile(r"^Requests per second:\s+([\d.]+)", re.MULTILINE)


@pytest.fixture(scope="module")
def cluster(busybox_tar: Path) -> Iterator[Swarm]:
    with lab_swarm(busybox_tar, prefix="b", workers=1) as c:
        c.cli("m1", "network", "create", "bench")
        for service, node, command in (
            ("srv", "w1", ["sleep", "3600"]),
            ("cli", "m1", ["sleep", "3600"]),
            ("web", "w1", ["sh", "-c", WEB]),
        ):
            replicas = "2" if service == "web" else "1"
            c.cli(
                "m1", "service", "create", "-d", "--name", service, "--network", "bench",
                "--replicas", replicas, "--constraint", f"node.hostname=={node}",
                "--stop-grace-period", "1s", "busybox", *command,
            )  # fmt: skip
        for service, count in (("srv", 1), ("cli", 1), ("web", 2)):
            c.wait_running(service, count)
        yield c


def task_netns(cluster: Swarm, service: str) -> tuple[str, str]:
    """(network namespace path, overlay address) of a running task of `service`."""
    names = cluster.hostnames()
    task = next(
        t
        for t in cluster.tasks(service)
        if t.status.state == RUNNING and t.desired_state <= RUNNING
    )
    node = names[task.node_id]
    rows = [
        json.loads(line)
        for line in cluster.cli(node, "ps", "--no-trunc", "--format", "json").splitlines()
    ]
    cid = next(str(r["ID"]) for r in rows if str(r["Names"]).startswith(f"{service}."))
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    ns = next(line.split()[0] for line in out.splitlines() if line.split()[0].endswith(cid[:12]))
    return f"/run/netns/{ns}", task.networks[0].addresses[0].split("/")[0]


def iperf(server_ns: str, client_ns: str, address: str) -> float:
    """Gbit/s of one 3 s iperf3 TCP run."""
    server = subprocess.Popen(
        ["nsenter", f"--net={server_ns}", "iperf3", "-s", "-1", "-B", address],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            done = subprocess.run(
                ["nsenter", f"--net={client_ns}", "iperf3", "-c", address, "-t", "3", "-J"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            report = json.loads(done.stdout or "{}")
            if "sum_received" in report.get("end", {}) or time.monotonic() > deadline:
                break
            time.sleep(0.1)  # the server is not listening yet: retry until the deadline
        assert "sum_received" in report.get("end", {}), report.get("error", done.stderr)
        bits = report["end"]["sum_received"]["bits_per_second"]
        return float(bits) / 1e9
    finally:
        server.kill()
        server.wait(timeout=10)


def ab(client_ns: str, url: str) -> float:
    done = subprocess.run(
        ["nsenter", f"--net={client_ns}", "ab", "-q", "-n", "2000", "-c", "8", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    match = RATE.search(done.stdout)
    assert match is not None, done.stdout
    return float(match.group(1))


def test_overlay_throughput_and_vip_connections(cluster: Swarm) -> None:
    srv_ns, srv_ip = task_netns(cluster, "srv")
    cli_ns, _ = task_netns(cluster, "cli")
    m1 = cluster.lab.host("m1")
    w1 = cluster.lab.host("w1")
    host_m1, host_w1 = f"/run/netns/{m1.netns}", f"/run/netns/{w1.netns}"
    overlay, underlay = [], []
    for _ in range(RUNS):
        underlay.append(iperf(host_w1, host_m1, w1.address))
        overlay.append(iperf(srv_ns, cli_ns, srv_ip))
    web = cluster.control.GetService(swarm.ServiceRef(service="web"), timeout=10)
    vip = web.endpoint.virtual_ips[0].addr.split("/")[0]
    task_ip = next(
        t.networks[0].addresses[0].split("/")[0]
        for t in cluster.tasks("web")
        if t.status.state == RUNNING
    )
    wait_for(
        lambda: (
            subprocess.run(
                ["nsenter", f"--net={cli_ns}", "busybox", "wget", "-q", "-O-", f"http://{vip}/"],
                capture_output=True,
                timeout=10,
            ).returncode
            == 0
        ),
        timeout=10,
        what="the VIP answering",
    )
    direct, via_vip = [], []
    for _ in range(RUNS):
        direct.append(ab(cli_ns, f"http://{task_ip}/"))
        via_vip.append(ab(cli_ns, f"http://{vip}/"))
    u, o = statistics.median(underlay), statistics.median(overlay)
    d, v = statistics.median(direct), statistics.median(via_vip)
    print(
        f"\n{'benchmark (swarm lab, median of 5)':48} {'value':>12} {'baseline':>12} {'ratio':>7}"
    )
    print(f"{'overlay TCP task->task across hosts (Gbit/s)':48} {o:12.2f} {u:12.2f} {o / u:6.2f}x"
          "  target >= 0.8x (underlay host->host)")  # fmt: skip
    print(f"{'connections/s to the VIP (2 tasks)':48} {v:12.0f} {d:12.0f} {v / d:6.2f}x"
          "  target >= 0.9x (straight to a task)")  # fmt: skip

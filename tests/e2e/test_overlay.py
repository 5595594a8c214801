"""Overlay networks on a real lab: 1 manager + 2 workers, real containers, VXLAN between
the hosts' namespaces, the embedded DNS, nftables VIPs and the routing mesh.

The web service is busybox httpd answering with its container's hostname; requests
are made from inside a client task (`pyswarm exec`), as a user would check. The tests
share the lab and run in file order.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from api import swarm_pb2 as swarm
from api import tasks as tasklib
from deploy import lab as labs
from tests.daemons import wait_for
from tests.e2e.test_services import RUNNING, Swarm, lab_swarm

pytestmark = pytest.mark.e2e

WEB = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"


@pytest.fixture(scope="module")
def cluster(busybox_tar: Path) -> Iterator[Swarm]:
    with lab_swarm(busybox_tar, prefix="o") as c:
        yield c
    leftovers = [n for n in labs_netns() if c.lab.name in n]
    assert not leftovers, leftovers


def labs_netns() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def client_task(cluster: Swarm, service: str) -> tuple[str, str]:
    """(node, container id) of a running task of `service`."""
    names = cluster.hostnames()
    for task in cluster.tasks(service):
        if task.status.state == RUNNING and task.desired_state == RUNNING:
            return names[task.node_id], tasklib.task_name(task)
    raise AssertionError(f"no running task of {service}")


def sh(cluster: Swarm, where: tuple[str, str], script: str, timeout: float = 30) -> str:
    node, container = where
    done = cluster.run(node, "exec", container, "sh", "-c", script, timeout=timeout)
    return done.stdout


def fetch(cluster: Swarm, where: tuple[str, str], url: str, count: int = 1) -> list[str]:
    """`count` GETs of `url` from inside a container (busybox wget, bounded by timeout)."""
    script = (
        f"i=0; while [ $i -lt {count} ]; do timeout 3 wget -q -O- {url} || echo FAIL; "
        "i=$((i+1)); done"
    )
    return sh(cluster, where, script, timeout=30 + count * 0.2).split()


def lookup(cluster: Swarm, where: tuple[str, str], name: str) -> list[str]:
    out = sh(cluster, where, f"nslookup {name} 2>/dev/null || true")
    # busybox: "Name:\tweb\nAddress: 10.0.1.2" after the server block
    body = out.split("\n\n", 1)[-1]
    return sorted(re.findall(r"Address:?\s+(\d+\.\d+\.\d+\.\d+)", body))


def task_ips(cluster: Swarm, service: str, network: str) -> list[str]:
    ips = []
    for task in cluster.tasks(service):
        if task.status.state == RUNNING and task.desired_state == RUNNING:
            for attachment in task.networks:
                if attachment.network.spec.name == network:
                    ips.append(attachment.addresses[0].split("/")[0])
    return sorted(ips)


def test_network_create_and_ls(cluster: Swarm) -> None:
    out = cluster.cli("m1", "network", "create", "-d", "overlay", "--attachable", "front")
    assert out.strip()
    rows = [
        json.loads(line)
        for line in cluster.cli("m1", "network", "ls", "--format", "json").splitlines()
    ]
    names = {r["Name"]: r for r in rows}
    assert names["front"]["Driver"] == "overlay" and names["front"]["Scope"] == "swarm"
    assert "ingress" in names
    inspect = json.loads(cluster.cli("m1", "network", "inspect", "front"))[0]
    assert inspect["IPAM"]["Config"][0]["Subnet"].startswith("10.")
    assert int(inspect["Options"]["com.docker.network.driver.overlay.vxlanid_list"]) >= 4096


def test_vip_reaches_every_replica_across_hosts(cluster: Swarm) -> None:
    cluster.cli(
        "m1", "service", "create", "-d", "--name", "web", "--replicas", "3",
        "--network", "front", "--stop-grace-period", "1s", "busybox", "sh", "-c", WEB,
    )  # fmt: skip
    cluster.cli(
        "m1", "service", "create", "-d", "--name", "client", "--network", "front",
        "--constraint", "node.hostname==w2", "--stop-grace-period", "1s",
        "busybox", "sleep", "3600",
    )  # fmt: skip
    assert cluster.wait_running("web", 3) == {"m1": 1, "w1": 1, "w2": 1}
    cluster.wait_running("client", 1)
    client = client_task(cluster, "client")
    vip = [
        v.addr.split("/")[0]
        for v in cluster.control.GetService(
            swarm.ServiceRef(service="web"), timeout=10
        ).endpoint.virtual_ips
    ]
    wait_for(lambda: lookup(cluster, client, "web") == vip, timeout=10, what="web -> VIP")
    ips = task_ips(cluster, "web", "front")
    wait_for(lambda: lookup(cluster, client, "tasks.web") == ips, timeout=10, what="tasks.web")
    answers = Counter(fetch(cluster, client, "http://web/", count=300))
    assert "FAIL" not in answers, answers
    assert len(answers) == 3 and min(answers.values()) >= 30, answers


def _vip(cluster: Swarm, service: str) -> list[str]:
    found = cluster.control.GetService(swarm.ServiceRef(service=service), timeout=10)
    return [v.addr.split("/")[0] for v in found.endpoint.virtual_ips]


def test_scale_up_dns_and_lb_follow(cluster: Swarm) -> None:
    client = client_task(cluster, "client")
    cluster.cli("m1", "service", "scale", "-d", "web=5")
    cluster.wait_running("web", 5)
    ips = task_ips(cluster, "web", "front")
    # Within 2 s of the tasks running, DNS lists them and the VIP spreads over them.
    wait_for(lambda: lookup(cluster, client, "tasks.web") == ips, timeout=2, what="5 in DNS")
    answers = Counter(fetch(cluster, client, "http://web/", count=100))
    assert len(answers) == 5 and "FAIL" not in answers, answers


def test_killed_task_leaves_dns_and_lb_before_its_replacement(cluster: Swarm) -> None:
    client = client_task(cluster, "client")
    victim = next(t for t in cluster.tasks("web") if t.status.state == RUNNING and t.node_id)
    ip = victim.networks[0].addresses[0].split("/")[0]
    node = cluster.hostnames()[victim.node_id]
    cluster.cli(node, "kill", tasklib.task_name(victim))
    wait_for(
        lambda: ip not in lookup(cluster, client, "tasks.web"), timeout=2, what="gone from DNS"
    )
    answers = Counter(fetch(cluster, client, "http://web/", count=40))
    assert "FAIL" not in answers, answers
    cluster.wait_running("web", 5)


def test_dnsrr_returns_the_task_addresses(cluster: Swarm) -> None:
    cluster.cli(
        "m1", "service", "create", "-d", "--name", "rr", "--replicas", "2",
        "--endpoint-mode", "dnsrr", "--network", "front", "--stop-grace-period", "1s",
        "busybox", "sh", "-c", WEB,
    )  # fmt: skip
    cluster.wait_running("rr", 2)
    client = client_task(cluster, "client")
    ips = task_ips(cluster, "rr", "front")
    assert _vip(cluster, "rr") == []
    wait_for(lambda: lookup(cluster, client, "rr") == ips, timeout=5, what="rr -> tasks")
    cluster.remove("rr")


def test_routing_mesh_answers_on_a_node_without_a_task(cluster: Swarm) -> None:
    cluster.cli(
        "m1", "service", "create", "-d", "--name", "pub", "--replicas", "2", "-p", "8080:80",
        "--constraint", "node.role==worker", "--stop-grace-period", "1s",
        "busybox", "sh", "-c", WEB,
    )  # fmt: skip
    cluster.wait_running("pub", 2)
    m1 = cluster.lab.host("m1").address  # no task of pub there

    def seen() -> Counter[str] | None:
        argv, env = labs.command_for(
            cluster.lab.host("w1"),
            [
                "sh",
                "-c",
                f"for i in 1 2 3 4 5 6; do timeout 3 busybox wget -q -O- "
                f"http://{m1}:8080/ || echo FAIL; done",
            ],
        )
        out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60).stdout
        answers = Counter(out.split())
        return answers if len(answers) == 2 and "FAIL" not in answers else None

    wait_for(seen, timeout=10, what="both pub replicas through m1's published port")
    dup = cluster.run("m1", "service", "create", "-d", "--name", "pub2", "-p", "8080:80",
                      "busybox", "sleep", "1")  # fmt: skip
    assert dup.returncode != 0 and "already in use" in dup.stderr, dup.stderr
    cluster.remove("pub")


def test_host_mode_publishes_only_where_a_task_runs(cluster: Swarm) -> None:
    cluster.cli(
        "m1", "service", "create", "-d", "--name", "hostpub",
        "--publish", "published=8081,target=80,mode=host",
        "--constraint", "node.hostname==w1", "--stop-grace-period", "1s",
        "busybox", "sh", "-c", WEB,
    )  # fmt: skip
    cluster.wait_running("hostpub", 1)

    def get(host: str) -> str:
        address = cluster.lab.host(host).address
        argv, env = labs.command_for(
            cluster.lab.host("w2"),
            ["sh", "-c", f"timeout 3 busybox wget -q -O- http://{address}:8081/ || echo FAIL"],
        )
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30).stdout

    wait_for(lambda: get("w1").strip() not in ("", "FAIL"), timeout=10, what="w1:8081")
    assert get("m1").strip() == "FAIL"
    cluster.remove("hostpub")


def test_two_overlays_are_isolated(cluster: Swarm) -> None:
    cluster.cli("m1", "network", "create", "--internal", "back")
    cluster.cli(
        "m1", "service", "create", "-d", "--name", "other", "--network", "back",
        "--constraint", "node.hostname==w2", "--stop-grace-period", "1s",
        "busybox", "sleep", "3600",
    )  # fmt: skip
    cluster.wait_running("other", 1)
    other = client_task(cluster, "other")
    web_ips = task_ips(cluster, "web", "front")
    assert lookup(cluster, other, "web") == []
    out = sh(cluster, other, f"timeout 3 wget -q -O- http://{web_ips[0]}/ || echo FAIL")
    assert out.strip() == "FAIL", out
    # An internal network has no way out: no eth0 on the node's bridge, no default route.
    assert "default" not in sh(cluster, other, "ip route"), sh(cluster, other, "ip route")


def test_run_joins_an_attachable_overlay(cluster: Swarm) -> None:
    done = cluster.run(
        "m1", "run", "--rm", "--network", "front", "busybox", "sh", "-c",
        "for i in 1 2 3 4 5 6; do timeout 3 wget -q -O- http://web/ || echo FAIL; done",
    )  # fmt: skip
    answers = Counter(done.stdout.split())
    assert done.returncode == 0 and "FAIL" not in answers and len(answers) >= 2, done
    refused = cluster.run("m1", "run", "--rm", "--network", "back", "busybox", "true")
    assert refused.returncode != 0 and "not attachable" in refused.stderr, refused.stderr
    standalone = [t for t in cluster.control.ListTasks(swarm.ListTasksRequest()).tasks
                  if not t.service_id]  # fmt: skip
    assert standalone == []


def test_network_rm_refused_in_use_then_cleans_everything(cluster: Swarm) -> None:
    refused = cluster.run("m1", "network", "rm", "front")
    assert refused.returncode != 0 and "in use" in refused.stderr, refused.stderr
    cluster.remove("web", "client", "other")
    cluster.cli("m1", "network", "rm", "front", "back")
    names = [
        json.loads(line)["Name"]
        for line in cluster.cli("m1", "network", "ls", "--format", "json").splitlines()
    ]
    assert "front" not in names and "back" not in names

    def overlay_namespaces() -> list[str] | None:
        found = [n for n in labs_netns() if re.search(r"^pyswarm-[0-9a-f]{6}-ov\d+$", n)]
        return found or None

    # No service publishes a port any more: not even ingress remains, and the hosts'
    # own namespaces have no table or link of ours left.
    wait_for(lambda: not overlay_namespaces(), timeout=10, what="overlay namespaces gone")
    for host in ("m1", "w1", "w2"):
        argv, env = labs.command_for(
            cluster.lab.host(host), ["sh", "-c", "nft list tables; ip -o link show"]
        )
        out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30).stdout
        assert not re.search(r"pyswarm-(ingress|vxlan|lb)|psw-ingress", out), (host, out)


def test_bad_input(cluster: Swarm) -> None:
    cluster.cli("m1", "network", "create", "--subnet", "10.77.0.0/24", "first")
    overlap = cluster.run("m1", "network", "create", "--subnet", "10.77.0.0/16", "second")
    assert overlap.returncode != 0 and "overlaps" in overlap.stderr
    small = cluster.run("m1", "network", "create", "--subnet", "10.78.0.0/30", "tiny")
    assert small.returncode != 0 and "too small" in small.stderr
    alias = cluster.run(
        "m1", "service", "create", "-d", "--name", "bad", "--network", "first,alias=-x",
        "busybox", "sleep", "1",
    )  # fmt: skip
    assert alias.returncode != 0 and "alias" in alias.stderr
    port = cluster.run("m1", "service", "create", "-d", "-p", "70000:80", "busybox")
    assert port.returncode != 0
    services = cluster.cli("m1", "service", "ls", "-q").split()
    assert services == []
    cluster.cli("m1", "network", "rm", "first")

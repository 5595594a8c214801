"""Stacks on a real lab (1 manager + 2 workers): the demo stack (deploy/demo/stack.yml,
images built with --build from busybox) deploys, answers through the routing mesh,
redeploys only what changed, prunes, and `stack rm` leaves nothing behind. The tests
share the lab and run in file order.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from api import swarm_pb2 as swarm
from deploy import lab as labs
from tests.daemons import wait_for
from tests.e2e.test_services import Swarm, lab_swarm

pytestmark = pytest.mark.e2e
DEMO = Path(__file__).resolve().parents[2] / "deploy" / "demo" / "stack.yml"


@pytest.fixture(scope="module")
def cluster(busybox_tar: Path) -> Iterator[Swarm]:
    with lab_swarm(busybox_tar, prefix="t") as c:
        yield c


def spec_versions(cluster: Swarm) -> dict[str, int]:
    services = cluster.control.ListServices(swarm.Empty(), timeout=10).services
    return {i.service.spec.name: i.service.spec_version for i in services}


def mesh_answers(cluster: Swarm, path: str = "/", count: int = 6) -> Counter[str]:
    m1 = cluster.lab.host("m1").address
    script = (
        f"for i in $(seq {count}); do timeout 3 busybox wget -q -O- http://{m1}:8080{path} "
        "|| echo FAIL; done"
    )
    argv, env = labs.command_for(cluster.lab.host("w1"), ["sh", "-c", script])
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60).stdout
    return Counter(line for line in out.splitlines() if line.strip())


def test_config_prints_the_normalised_file(cluster: Swarm) -> None:
    out = cluster.cli("m1", "stack", "config", "-c", str(DEMO))
    assert "web" in out and "backend" in out and "8080" in out


def test_deploy_builds_and_answers_through_the_mesh(cluster: Swarm) -> None:
    out = cluster.cli("m1", "stack", "deploy", "--build", "-c", str(DEMO), "demo", timeout=300)
    assert "Creating network demo_front" in out and "Creating service demo_web" in out
    cluster.wait_running("demo_backend", 2, timeout=120)
    cluster.wait_running("demo_web", 3, timeout=120)
    wait_for(
        lambda: len([a for a in mesh_answers(cluster) if a.startswith("web ")]) >= 2,
        timeout=20,
        what="answers from two web replicas through m1's published port",
    )
    answers = mesh_answers(cluster)
    assert all("hello from a swarm secret" in a for a in answers), answers
    backend = mesh_answers(cluster, "/cgi-bin/backend", count=2)
    assert all("asked: backend " in a for a in backend), backend
    rows = [
        json.loads(x) for x in cluster.cli("m1", "stack", "ls", "--format", "json").splitlines()
    ]
    assert {"Name": "demo", "Services": "2", "Orchestrator": "Swarm"} in rows
    ps = cluster.cli("m1", "stack", "ps", "demo")
    assert ps.count("demo_web.") == 3 and ps.count("demo_backend.") == 2
    services = cluster.cli("m1", "stack", "services", "demo")
    assert "demo_web" in services and "*:8080->80/tcp" in services


def test_redeploy_updates_only_what_changed(cluster: Swarm, tmp_path: Path) -> None:
    before = spec_versions(cluster)
    same = cluster.cli("m1", "stack", "deploy", "-c", str(DEMO), "demo", timeout=300)
    assert "Updating" not in same, same
    override = tmp_path / "override.yml"
    override.write_text(
        textwrap.dedent(
            """\
            services:
              backend:
                environment:
                  MODE: "2"
            """
        )
    )
    out = cluster.cli(
        "m1", "stack", "deploy", "-c", str(DEMO), "-c", str(override), "demo", timeout=300
    )
    assert "Updating service demo_backend" in out and "Updating service demo_web" not in out, out
    after = spec_versions(cluster)
    assert after["demo_web"] == before["demo_web"]
    assert after["demo_backend"] == before["demo_backend"] + 1


def test_prune_removes_services_no_longer_in_the_file(cluster: Swarm, tmp_path: Path) -> None:
    two = tmp_path / "two.yml"
    two.write_text(
        "services:\n  a:\n    image: busybox\n    command: sleep 3600\n"
        "  b:\n    image: busybox\n    command: sleep 3600\n"
    )
    one = tmp_path / "one.yml"
    one.write_text("services:\n  a:\n    image: busybox\n    command: sleep 3600\n")
    cluster.cli("m1", "stack", "deploy", "-c", str(two), "small")
    assert {"small_a", "small_b"} <= set(spec_versions(cluster))
    out = cluster.cli("m1", "stack", "deploy", "--prune", "-c", str(one), "small")
    assert "Removing service small_b" in out
    names = set(spec_versions(cluster))
    assert "small_a" in names and "small_b" not in names
    cluster.cli("m1", "stack", "rm", "small")


def test_bad_files_are_refused_with_where(cluster: Swarm, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("services:\n  web:\n    image: busybox\n    ports:\n      - 80x\n")
    done = cluster.run("m1", "stack", "deploy", "-c", str(bad), "bad")
    assert done.returncode != 0 and "bad.yml:5" in done.stderr, done.stderr
    assert "bad_web" not in spec_versions(cluster)


def test_rm_leaves_nothing_behind(cluster: Swarm) -> None:
    cluster.cli("m1", "stack", "rm", "demo", timeout=120)
    assert not [n for n in spec_versions(cluster) if n.startswith("demo_")]
    networks = cluster.cli("m1", "network", "ls")
    secrets = cluster.cli("m1", "secret", "ls")
    assert "demo_front" not in networks and "demo_greeting" not in secrets

    def demo_containers() -> list[object]:
        return [
            row
            for node in ("m1", "w1", "w2")
            for service in ("demo_web", "demo_backend")
            for row in cluster.containers(node, service)
        ]

    wait_for(lambda: not demo_containers(), timeout=60, what="demo containers gone")

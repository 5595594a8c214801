"""Services on a real lab with real containers: 1 manager + 2 workers (heartbeat 1 s).

The manager m1 has the busybox image only in its own store; `service create busybox`
pins it in the cluster registry and every node pulls it from there. The tests share
the lab and run in file order; each removes the services it made. Actions go through
the CLI, as a user's would; what a user would check (`service ps`, `docker ps` on a
node) is read from the control API and the nodes' engines.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from api import objects_pb2 as objects
from api import swarm_pb2 as swarm
from api import swarm_pb2_grpc as swarm_grpc
from api import tasks as tasklib
from deploy import lab as labs
from tests.daemons import wait_for

pytestmark = pytest.mark.e2e
RUNNING = objects.TASK_RUNNING


class Swarm:
    def __init__(self, lab: labs.Lab) -> None:
        self.lab = lab
        self._channel = grpc.insecure_channel(lab.host("m1").host)
        self.control = swarm_grpc.ControlStub(self._channel)

    def cli(self, node: str, *args: str, timeout: float = 60) -> str:
        return labs.run_cli(self.lab.host(node), *args, timeout=timeout)

    def run(self, node: str, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        """The CLI with its exit code and both streams (for commands expected to fail)."""
        argv, env = labs.command_for(self.lab.host(node), [labs._pyswarm(), *args])
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)

    def hostnames(self) -> dict[str, str]:
        nodes = self.control.ListNodes(swarm.Empty(), timeout=10).nodes
        return {n.meta.id: n.description.hostname for n in nodes}

    def tasks(self, service: str) -> list[objects.Task]:
        request = swarm.ListTasksRequest(services=[service])
        return list(self.control.ListTasks(request, timeout=10).tasks)

    def running(self, service: str) -> Counter[str]:
        """Hostname → tasks of `service` running there (desired and observed)."""
        names = self.hostnames()
        return Counter(
            names.get(t.node_id, t.node_id)
            for t in self.tasks(service)
            if t.status.state == RUNNING and t.desired_state == RUNNING
        )

    def wait_running(self, service: str, count: int, *, timeout: float = 60) -> Counter[str]:
        def done() -> Counter[str] | None:
            now = self.running(service)
            live = [t for t in self.tasks(service) if t.desired_state <= RUNNING]
            return now if sum(now.values()) == count and len(live) == count else None

        return wait_for(done, timeout=timeout, what=f"{count} running tasks of {service}")

    def containers(self, node: str, service: str) -> list[dict[str, object]]:
        out = self.cli(node, "ps", "--format", "json")
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        return [r for r in rows if str(r["Names"]).startswith(f"{service}.")]

    def remove(self, *services: str) -> None:
        self.cli("m1", "service", "rm", *services)
        for service in services:
            for node in ("m1", "w1", "w2"):
                self._wait_gone(node, service)

    def _wait_gone(self, node: str, service: str) -> None:
        wait_for(
            lambda: not self.containers(node, service),
            timeout=60,
            what=f"{service}'s containers gone from {node}",
        )

    def close(self) -> None:
        self._channel.close()


@contextlib.contextmanager
def lab_swarm(busybox_tar: Path, *, prefix: str, workers: int = 2) -> Iterator[Swarm]:
    """A 1-manager lab (heartbeat 1 s) with busybox in m1's store; removed at the end."""
    name = prefix + secrets.token_hex(3)
    try:
        lab = labs.up(name, managers=1, workers=workers, heartbeat="1s")
    except BaseException:
        labs.down(name)
        raise
    c = Swarm(lab)
    try:
        c.cli("m1", "image", "import", "-c", 'CMD ["sh"]', str(busybox_tar), "busybox")
        yield c
    finally:
        c.close()
        labs.down(name)


@pytest.fixture(scope="module")
def cluster(busybox_tar: Path) -> Iterator[Swarm]:
    with lab_swarm(busybox_tar, prefix="s") as c:
        yield c


def test_create_spreads_replicas_over_the_nodes(cluster: Swarm) -> None:
    out = cluster.cli(
        "m1", "service", "create", "-d", "--name", "web", "--replicas", "6",
        "--stop-grace-period", "1s", "busybox", "sleep", "3600",
    )  # fmt: skip
    assert out.strip()
    assert cluster.wait_running("web", 6) == {"m1": 2, "w1": 2, "w2": 2}
    image = cluster.tasks("web")[0].spec.container.image
    assert image.startswith("198.18.0.11:5000/busybox@sha256:"), image
    rows = cluster.containers("w1", "web")
    assert len(rows) == 2 and all(r["State"] == "running" for r in rows)


def test_scale_up_and_down(cluster: Swarm) -> None:
    cluster.cli("m1", "service", "scale", "-d", "web=9")
    assert cluster.wait_running("web", 9) == {"m1": 3, "w1": 3, "w2": 3}
    cluster.cli("m1", "service", "scale", "-d", "web=3")
    # As docker: the tasks removed are those on the most loaded nodes, so what is left
    # stays spread (which slots survive follows from that).
    assert cluster.wait_running("web", 3) == {"m1": 1, "w1": 1, "w2": 1}
    slots = {t.slot for t in cluster.tasks("web") if t.desired_state == RUNNING}
    assert len(slots) == 3
    wait_for(
        lambda: sum(len(cluster.containers(n, "web")) for n in ("m1", "w1", "w2")) <= 9,
        timeout=30,
        what="scaled-down containers stopped",
    )


@pytest.mark.parametrize("order", ["start-first", "stop-first"])
def test_rolling_update(cluster: Swarm, order: str) -> None:
    before = cluster.control.GetService(swarm.ServiceRef(service="web"), timeout=10)
    out = cluster.cli(
        "m1", "service", "update", "--update-order", order, "--update-parallelism", "2",
        "--update-monitor", "1s", "--env-add", f"ORDER={order}", "web", timeout=120,
    )  # fmt: skip
    assert "converged" in out
    cluster.wait_running("web", 3)
    live = [t for t in cluster.tasks("web") if t.desired_state == RUNNING]
    assert all(f"ORDER={order}" in t.spec.container.env for t in live)
    after = cluster.control.GetService(swarm.ServiceRef(service="web"), timeout=10)
    assert after.spec_version == before.spec_version + 1
    assert after.update_status.state == objects.UpdateStatus.COMPLETED


def test_failing_update_rolls_back(cluster: Swarm) -> None:
    res = cluster.run(
        "m1", "service", "update", "--update-failure-action", "rollback",
        "--update-monitor", "2s", "--restart-delay", "1s", "--args", "false", "web",
        timeout=180,
    )  # fmt: skip
    assert res.returncode != 0, res.stdout
    assert "roll" in res.stderr.lower() or "roll" in res.stdout.lower()

    def rolled_back() -> objects.Service | None:
        svc = cluster.control.GetService(swarm.ServiceRef(service="web"), timeout=10)
        done = svc.update_status.state == objects.UpdateStatus.ROLLBACK_COMPLETED
        return svc if done else None

    svc = wait_for(rolled_back, timeout=90, what="the rollback to complete")
    assert list(svc.spec.task.container.args) == ["sleep", "3600"]
    cluster.wait_running("web", 3)


def test_failing_health_check_restarts_the_task(cluster: Swarm) -> None:
    cluster.cli(
        "m1", "service", "create", "-d", "--name", "hc", "--restart-delay", "1s",
        "--health-cmd", "test -e /tmp/ok", "--health-interval", "1s", "--health-retries", "2",
        "--health-timeout", "1s", "--stop-grace-period", "1s", "busybox",
        "sh", "-c", "touch /tmp/ok; sleep 4; rm /tmp/ok; sleep 3600",
    )  # fmt: skip
    cluster.wait_running("hc", 1)
    first = next(t for t in cluster.tasks("hc") if t.desired_state == RUNNING)
    assert first.status.healthy

    def failed_and_replaced() -> bool:
        tasks = cluster.tasks("hc")
        old = next(t for t in tasks if t.meta.id == first.meta.id)
        others = [t for t in tasks if t.meta.id != first.meta.id and t.slot == first.slot]
        return old.status.state == objects.TASK_FAILED and bool(others)

    wait_for(failed_and_replaced, timeout=60, what="the unhealthy task to be replaced")
    old = next(t for t in cluster.tasks("hc") if t.meta.id == first.meta.id)
    assert "unhealthy" in old.status.err
    cluster.remove("hc")


def test_constraint_and_drain(cluster: Swarm) -> None:
    cluster.cli(
        "m1", "service", "create", "-d", "--name", "pinned", "--replicas", "2",
        "--constraint", "node.hostname==w1", "--stop-grace-period", "1s",
        "busybox", "sleep", "3600",
    )  # fmt: skip
    assert cluster.wait_running("pinned", 2) == {"w1": 2}
    cluster.cli("m1", "node", "update", "--availability", "drain", "w1")
    try:
        # web moves off w1; pinned has nowhere to go and says why.
        wait_for(
            lambda: "w1" not in cluster.running("web") and not cluster.containers("w1", "web"),
            timeout=60,
            what="web drained off w1",
        )
        cluster.wait_running("web", 3)

        def pending_reason() -> str | None:
            pending = [
                t
                for t in cluster.tasks("pinned")
                if t.desired_state == RUNNING and t.status.state == objects.TASK_PENDING
            ]
            return pending[0].status.err if len(pending) == 2 and pending[0].status.err else None

        reason = wait_for(pending_reason, timeout=60, what="pinned tasks pending with a reason")
        assert reason.startswith("no suitable node"), reason
        ps = cluster.cli("m1", "service", "ps", "--no-trunc", "pinned")
        assert "no suitable node" in ps
    finally:
        cluster.cli("m1", "node", "update", "--availability", "active", "w1")
    assert cluster.wait_running("pinned", 2) == {"w1": 2}
    cluster.remove("pinned")


def _set_link(cluster: Swarm, node: str, *, up: bool) -> None:
    host = cluster.lab.host(node)
    state = "up" if up else "down"
    subprocess.run(
        ["nsenter", f"--net={host.netns_path}", "ip", "link", "set", labs.HOST_IFNAME, state],
        check=True,
    )


def test_worker_down_its_tasks_move_and_come_back_without_duplicates(cluster: Swarm) -> None:
    cluster.cli("m1", "service", "scale", "-d", "web=6")
    cluster.wait_running("web", 6)
    on_w2 = cluster.running("web")["w2"]
    assert on_w2 > 0
    labs.kill(cluster.lab, "w2")
    _set_link(cluster, "w2", up=False)
    try:
        started = time.monotonic()

        # 3 heartbeats (1 s) + the restart delay (replacements of a lost node's tasks
        # are immediate) + 5 s.
        def moved() -> Counter[str] | None:
            counts = cluster.running("web")
            return counts if sum(counts.values()) == 6 and "w2" not in counts else None

        counts = wait_for(moved, timeout=3 * 1 + 5 + 5 + 5, what="web's tasks running elsewhere")
        assert counts["m1"] + counts["w1"] == 6
        assert time.monotonic() - started < 18
    finally:
        _set_link(cluster, "w2", up=True)
        labs.restart(cluster.lab, "w2")
    # Back: its stale tasks are shut down, nothing runs twice.
    wait_for(
        lambda: not [r for r in cluster.containers("w2", "web") if r["State"] == "running"],
        timeout=60,
        what="w2's stale web containers stopped",
    )

    def one_per_slot() -> Counter[int] | None:
        slots = Counter(t.slot for t in cluster.tasks("web") if t.status.state == RUNNING)
        return slots if len(slots) == 6 and all(n == 1 for n in slots.values()) else None

    # (the stopped containers' SHUTDOWN reaches the store a moment after they stop)
    wait_for(one_per_slot, timeout=10, what="exactly one running task per slot")
    assert sum(cluster.running("web").values()) == 6


def test_tasks_and_their_logs_survive_a_daemon_restart(cluster: Swarm) -> None:
    cluster.cli(
        "m1", "service", "create", "-d", "--name", "keep", "--replicas", "2",
        "--constraint", "node.hostname==w1", "--stop-grace-period", "1s", "busybox",
        "sh", "-c", "echo started once; sleep 3600",
    )  # fmt: skip
    cluster.wait_running("keep", 2)
    before = {t.meta.id for t in cluster.tasks("keep")}
    containers = {str(r["ID"]) for r in cluster.containers("w1", "keep")}
    # A restart takes longer than the lab's 3 x 1 s heartbeat window: give it docker's.
    cluster.cli("m1", "swarm", "update", "--dispatcher-heartbeat", "5s")
    try:
        labs.kill(cluster.lab, "w1", sig=signal.SIGTERM)
        labs.restart(cluster.lab, "w1")
        wait_for(
            lambda: {str(r["ID"]) for r in cluster.containers("w1", "keep")} == containers,
            timeout=30,
            what="w1's task containers listed again",
        )
        assert all(r["State"] == "running" for r in cluster.containers("w1", "keep"))
        cluster.wait_running("keep", 2)
        assert {t.meta.id for t in cluster.tasks("keep")} == before  # adopted, not replaced
        logs = cluster.cli("m1", "service", "logs", "keep")
        assert logs.count("started once") == 2, logs
    finally:
        cluster.cli("m1", "swarm", "update", "--dispatcher-heartbeat", "1s")
    cluster.remove("keep")


def test_secret_is_a_file_in_the_container_and_not_plaintext_in_raft(
    cluster: Swarm, tmp_path: Path
) -> None:
    value = "s3cr3t-" + secrets.token_hex(8)
    path = tmp_path / "secret.txt"
    path.write_text(value)
    cluster.cli("m1", "secret", "create", "db_pass", str(path))
    cluster.cli(
        "m1", "service", "create", "-d", "--name", "uses-secret", "--secret", "db_pass",
        "--constraint", "node.hostname==w1", "--stop-grace-period", "1s",
        "busybox", "sleep", "3600",
    )  # fmt: skip
    cluster.wait_running("uses-secret", 1)
    name = str(cluster.containers("w1", "uses-secret")[0]["Names"])
    assert cluster.cli("w1", "exec", name, "cat", "/run/secrets/db_pass") == value
    mode = cluster.cli("w1", "exec", name, "stat", "-c", "%a", "/run/secrets/db_pass")
    assert mode.strip() == "444"
    res = cluster.run("m1", "secret", "rm", "db_pass")
    assert res.returncode == 1 and "in use by the following service: uses-secret" in res.stderr
    raft = cluster.lab.data_dir / "m1" / "swarm"
    for file in raft.rglob("*"):
        if file.is_file():
            assert value.encode() not in file.read_bytes(), file
    cluster.remove("uses-secret")
    assert not [m for m in Path("/proc/mounts").read_text().splitlines() if "swarm/files" in m]
    cluster.cli("m1", "secret", "rm", "db_pass")


def test_an_image_named_with_a_registry_is_pinned_by_digest(
    cluster: Swarm, busybox_tar: Path
) -> None:
    ref = "198.18.0.11:5000/demo/app:1"
    cluster.cli("m1", "image", "import", "-c", 'CMD ["sh"]', str(busybox_tar), ref)
    cluster.cli("m1", "push", ref)
    cluster.cli("m1", "rmi", ref)  # only the registry has it now
    cluster.cli("m1", "service", "create", "-d", "--name", "app", ref, "sleep", "3600")
    cluster.wait_running("app", 1)
    image = cluster.tasks("app")[0].spec.container.image
    assert image.startswith("198.18.0.11:5000/demo/app@sha256:"), image
    cluster.remove("app")


def test_service_logs_from_two_nodes_and_with_one_down(cluster: Swarm) -> None:
    cluster.cli(
        "m1", "service", "create", "-d", "--name", "talker", "--replicas", "2",
        "--constraint", "node.role==worker", "--replicas-max-per-node", "1",
        "--stop-grace-period", "1s", "busybox",
        "sh", "-c", 'i=0; while true; do echo "line $i from $(hostname)"; i=$((i+1)); sleep 0.5; done',
    )  # fmt: skip
    assert cluster.wait_running("talker", 2) == {"w1": 1, "w2": 1}

    def both() -> str | None:
        out = cluster.cli("m1", "service", "logs", "talker")
        return out if "@w1" in out and "@w2" in out else None

    out = wait_for(both, timeout=30, what="logs from both nodes")
    assert "line 0 from" in out
    argv, env = labs.command_for(
        cluster.lab.host("m1"), [labs._pyswarm(), "service", "logs", "-f", "--tail", "0", "talker"]
    )
    follow = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
    try:
        seen: set[str] = set()
        deadline = time.monotonic() + 20
        assert follow.stdout is not None
        while time.monotonic() < deadline and seen != {"w1", "w2"}:
            line = follow.stdout.readline()
            seen |= {n for n in ("w1", "w2") if f"@{n}" in line}
        assert seen == {"w1", "w2"}
    finally:
        follow.terminate()
        follow.wait(timeout=10)
        if follow.stdout is not None:
            follow.stdout.close()
    labs.kill(cluster.lab, "w2")
    try:
        res = cluster.run("m1", "service", "logs", "talker", timeout=60)
        assert res.returncode == 0, res.stderr
        assert "@w1" in res.stdout
        assert "w2" in res.stderr  # a warning names the node that could not answer
    finally:
        labs.restart(cluster.lab, "w2")
    cluster.remove("talker")


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--constraint", "node.role>worker"], "constraint"),
        (["--replicas", "-1"], "-1"),
        (["--mode", "global", "--replicas", "3"], "replicas can only be used with replicated"),
        (["--name", "web"], "already exists"),
    ],
)
def test_bad_service_input_is_refused_and_makes_nothing(
    cluster: Swarm, args: list[str], error: str
) -> None:
    before = cluster.control.ListServices(swarm.Empty(), timeout=10).services
    argv = ["service", "create", "-d", *args, "busybox", "sleep", "1"]
    if "--name" not in args:
        argv[3:3] = ["--name", "bad"]
    res = cluster.run("m1", *argv)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and error in lines[0], res.stderr
    after = cluster.control.ListServices(swarm.Empty(), timeout=10).services
    assert len(after) == len(before)


def test_unknown_image_and_oversized_reservation(cluster: Swarm, tmp_path: Path) -> None:
    cluster.cli("m1", "service", "create", "-d", "--name", "ghost", "no-such-image:1", "true")

    def rejected() -> objects.Task | None:
        return next(
            (t for t in cluster.tasks("ghost") if t.status.state == objects.TASK_REJECTED), None
        )

    task = wait_for(rejected, timeout=60, what="the task to be rejected")
    assert "no-such-image" in task.status.err
    assert "No such image" in cluster.cli("m1", "service", "ps", "--no-trunc", "ghost")
    cluster.cli(
        "m1", "service", "create", "-d", "--name", "huge", "--reserve-memory", "10T",
        "busybox", "sleep", "1",
    )  # fmt: skip

    def pending() -> str | None:
        tasks = cluster.tasks("huge")
        return tasks[0].status.err if tasks and tasks[0].status.err else None

    reason = wait_for(pending, timeout=30, what="huge pending with a reason")
    assert reason == "no suitable node (insufficient memory on 3 nodes)"
    big = tmp_path / "big"
    big.write_bytes(b"x" * (500 * 1024 + 1))
    res = cluster.run("m1", "secret", "create", "big", str(big))
    assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1
    svc = cluster.control.GetService(swarm.ServiceRef(service="huge"), timeout=10)
    spec = objects.ServiceSpec()
    spec.CopyFrom(svc.spec)
    spec.replicas = 2
    stale = swarm.UpdateServiceRequest(
        service_id=svc.meta.id, version=svc.meta.version - 1, spec=spec
    )
    with pytest.raises(grpc.RpcError, match="out of sequence"):
        cluster.control.UpdateService(stale, timeout=10)
    cluster.remove("ghost", "huge", "web")
    assert not cluster.control.ListServices(swarm.Empty(), timeout=10).services
    for node in ("m1", "w1", "w2"):
        assert not [
            r for r in cluster.containers(node, "") if tasklib.LABEL_TASK_ID in str(r.get("Labels"))
        ]

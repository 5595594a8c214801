"""The swarm control plane on a real lab: 3 managers + 2 workers, each a daemon in its
own network namespace, Raft between the managers over the lab switch.

The tests share one lab (forming it costs ~8 s) and run in file order; each leaves it
with three healthy managers for the next, except the last, which re-forms the swarm
with `--force-new-cluster`. Writes in timed tests go straight to the daemons' unix
sockets over gRPC (the CLI's ~0.5 s start-up would swamp what is measured).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from api import objects_pb2 as objects
from api import pki
from api import swarm_pb2 as swarm
from api import swarm_pb2_grpc as swarm_grpc
from deploy import lab as labs
from tests.daemons import wait_for

pytestmark = pytest.mark.e2e
MANAGERS = ("m1", "m2", "m3")
NO_LEADER = "does not have a leader"


class Cluster:
    def __init__(self, lab: labs.Lab) -> None:
        self.lab = lab
        self._channels: dict[str, grpc.Channel] = {}

    def cli(self, node: str, *args: str) -> str:
        return labs.run_cli(self.lab.host(node), *args)

    def control(self, node: str) -> swarm_grpc.ControlStub:
        if node not in self._channels:
            self._channels[node] = grpc.insecure_channel(self.lab.host(node).host)
        return swarm_grpc.ControlStub(self._channels[node])

    def swarm(self, node: str) -> swarm_grpc.SwarmStub:
        self.control(node)
        return swarm_grpc.SwarmStub(self._channels[node])

    def nodes(self, via: str = "m1") -> dict[str, dict[str, object]]:
        lines = self.cli(via, "node", "ls", "--format", "json").splitlines()
        return {d["Hostname"]: d for d in map(json.loads, lines)}

    def leader(self, *, among: tuple[str, ...] = MANAGERS) -> str:
        def find() -> str | None:
            for via in among:
                try:
                    listed = self.nodes(via)
                except labs.LabError:
                    continue
                leaders = [h for h, d in listed.items() if d["ManagerStatus"] == "Leader"]
                if leaders and leaders[0] in among:
                    return leaders[0]
            return None

        return str(wait_for(find, timeout=15, what="a leader"))

    def set_label(self, via: str, target: str, key: str, value: str, *, timeout: float) -> None:
        """Write a label through `via`'s control API, retrying stale versions."""
        stub = self.control(via)
        deadline = time.monotonic() + timeout
        while True:
            left = max(deadline - time.monotonic(), 0.5)
            try:
                node = stub.GetNode(swarm.NodeRef(node=target), timeout=left)
                spec = objects.NodeSpec()
                spec.CopyFrom(node.spec)
                spec.labels[key] = value
                stub.UpdateNode(
                    swarm.UpdateNodeRequest(
                        node_id=node.meta.id, version=node.meta.version, spec=spec
                    ),
                    timeout=max(deadline - time.monotonic(), 0.5),
                )
                return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def labels(self, via: str, target: str) -> dict[str, str]:
        return dict(self.control(via).GetNode(swarm.NodeRef(node=target), timeout=10).spec.labels)

    def healthy(self) -> None:
        """Every manager's daemon runs and sees three reachable managers."""
        for name in MANAGERS:
            if labs._running_daemon(self.lab.host(name)) is None:
                labs.restart(self.lab, name)

        def settled() -> bool:
            try:
                listed = self.nodes("m1")
            except labs.LabError:
                return False
            statuses = sorted(str(listed[m]["ManagerStatus"]) for m in MANAGERS)
            return statuses == ["Leader", "Reachable", "Reachable"] and all(
                d["Status"] == "Ready" for d in listed.values()
            )

        wait_for(settled, timeout=30, what="three healthy managers", interval=0.3)

    def lab_data(self, node: str) -> Path:
        return Path(self.lab.host(node).data_root)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    name = "c" + secrets.token_hex(3)
    try:
        lab = labs.up(name, managers=3, workers=2, heartbeat="1s")
    except BaseException:
        labs.down(name)
        raise
    c = Cluster(lab)
    try:
        yield c
    finally:
        c.close()
        labs.down(name)


def test_every_node_is_ready_with_one_leader(cluster: Cluster) -> None:
    listed = cluster.nodes("m2")
    assert sorted(listed) == ["m1", "m2", "m3", "w1", "w2"]
    assert {d["Status"] for d in listed.values()} == {"Ready"}
    statuses = sorted(str(listed[m]["ManagerStatus"]) for m in MANAGERS)
    assert statuses == ["Leader", "Reachable", "Reachable"]
    assert listed["w1"]["ManagerStatus"] == listed["w2"]["ManagerStatus"] == ""
    assert [h for h, d in listed.items() if d["Self"]] == ["m2"]


def test_a_write_on_any_manager_is_read_on_every_other(cluster: Cluster) -> None:
    for i, via in enumerate(MANAGERS):
        cluster.set_label(via, "w2", "written-by", via, timeout=10)
        for reader in MANAGERS:
            assert cluster.labels(reader, "w2")["written-by"] == via, (i, reader)


def test_a_stale_version_is_refused(cluster: Cluster) -> None:
    stub = cluster.control("m2")
    node = stub.GetNode(swarm.NodeRef(node="w1"))
    cluster.set_label("m3", "w1", "bump", "1", timeout=10)
    spec = objects.NodeSpec()
    spec.CopyFrom(node.spec)
    spec.labels["lost"] = "update"
    with pytest.raises(grpc.RpcError) as err:
        stub.UpdateNode(
            swarm.UpdateNodeRequest(node_id=node.meta.id, version=node.meta.version, spec=spec)
        )
    assert "update out of sequence" in (err.value.details() or "")
    assert "lost" not in cluster.labels("m1", "w1")


def test_promote_and_demote(cluster: Cluster) -> None:
    assert "promoted to a manager" in cluster.cli("m2", "node", "promote", "w1")
    wait_for(
        lambda: cluster.nodes("m1")["w1"]["ManagerStatus"] == "Reachable",
        timeout=20,
        what="w1 to be a reachable manager",
        interval=0.2,
    )
    assert cluster.cli("w1", "node", "ls", "-q").split()  # a manager now: it answers
    cert = cluster.lab_data("w1") / "swarm" / "certificates" / "node.crt"
    assert pki.cert_info(cert.read_bytes()).role == "manager"  # renewed with the new role
    assert "demoted" in cluster.cli("m3", "node", "demote", "w1")
    wait_for(
        lambda: cluster.nodes("m1")["w1"]["ManagerStatus"] == "",
        timeout=20,
        what="w1 to be a worker again",
        interval=0.2,
    )
    wait_for(
        lambda: not (cluster.lab_data("w1") / "swarm" / "manager").exists(),
        timeout=10,
        what="w1 to drop its Raft data",
    )
    with pytest.raises(labs.LabError, match="Worker nodes can't be used"):
        cluster.cli("w1", "node", "ls")
    wait_for(
        lambda: pki.cert_info(cert.read_bytes()).role == "worker",
        timeout=10,
        what="w1's certificate to be a worker's again",
    )


def test_every_node_pulls_from_a_managers_registry_over_tls(
    cluster: Cluster, busybox_tar: Path
) -> None:
    """Each manager serves a registry on :5000 with a certificate from the cluster CA,
    which every node trusts: no insecure-registry flag, no certificate to install."""
    ref = f"{cluster.lab.host('m2').address}:5000/tools/busybox:1"
    cluster.cli("m2", "image", "import", str(busybox_tar), ref)
    assert "digest: sha256:" in cluster.cli("m2", "push", ref)
    out = cluster.cli("w2", "run", "--rm", ref, "echo", "pulled over TLS")
    assert out.strip() == "pulled over TLS"
    cluster.cli("w2", "rmi", ref)


def test_a_demotion_that_would_lose_quorum_is_refused(cluster: Cluster) -> None:
    leader = cluster.leader()
    down, target = [m for m in MANAGERS if m != leader]
    labs.kill(cluster.lab, down)
    try:
        with pytest.raises(labs.LabError, match="lose quorum"):
            cluster.cli(leader, "node", "demote", target)
        assert cluster.nodes(leader)[target]["ManagerStatus"] == "Reachable"
    finally:
        labs.restart(cluster.lab, down)
    cluster.healthy()


def test_leader_sigkill_elects_a_leader_and_writes_succeed_within_2s(cluster: Cluster) -> None:
    leader = cluster.leader()
    survivor = next(m for m in MANAGERS if m != leader)
    killed_at = time.monotonic()
    labs.kill(cluster.lab, leader)
    cluster.set_label(survivor, "w1", "after-failover", "yes", timeout=10)
    elapsed = time.monotonic() - killed_at
    labs.restart(cluster.lab, leader)
    assert elapsed < 2.0, f"first acknowledged write {elapsed:.2f}s after the kill"
    listed = cluster.nodes(survivor)
    # Nodes reconnecting to the new leader may show Unknown for a moment, never Down.
    assert {d["Status"] for d in listed.values()} <= {"Ready", "Unknown"}, listed
    cluster.healthy()
    assert cluster.labels(leader, "w1")["after-failover"] == "yes"


def test_a_partitioned_leader_stops_accepting_writes(cluster: Cluster) -> None:
    old = cluster.leader()
    netns = cluster.lab.host(old).netns
    link = ["nsenter", f"--net=/run/netns/{netns}", "ip", "link", "set", "eth0"]
    subprocess.run([*link, "down"], check=True)
    try:
        with pytest.raises(grpc.RpcError) as err:
            cluster.set_label(old, "w2", "partitioned", "old-leader", timeout=3)
        assert NO_LEADER in (err.value.details() or "")
        others = tuple(m for m in MANAGERS if m != old)
        new = cluster.leader(among=others)
        cluster.set_label(new, "w2", "partitioned", "majority", timeout=10)
    finally:
        subprocess.run([*link, "up"], check=True)
    cluster.healthy()

    def caught_up() -> bool:
        try:  # rejoining, it may first disturb an election (pysyncobj has no pre-vote)
            return cluster.labels(old, "w2").get("partitioned") == "majority"
        except grpc.RpcError:
            return False

    wait_for(caught_up, timeout=15, what="the old leader to catch up", interval=0.2)


def test_quorum_loss_refuses_writes_and_leaves_containers_running(
    cluster: Cluster, busybox_tar: Path
) -> None:
    cluster.cli("w1", "image", "import", str(busybox_tar), "busybox:latest")
    cid = cluster.cli("w1", "run", "-d", "busybox", "sleep", "600").strip()
    keep = cluster.leader()
    lost = [m for m in MANAGERS if m != keep]
    for name in lost:
        labs.kill(cluster.lab, name)
    try:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            cluster.set_label(keep, "w2", "quorum", "lost", timeout=6)
        assert NO_LEADER in (err.value.details() or "")
        assert time.monotonic() - started < 15
        with pytest.raises(labs.LabError, match=NO_LEADER):
            cluster.cli(keep, "node", "update", "--label-add", "x=y", "w2")
        assert cluster.cli("w1", "ps", "-q", "--no-trunc").split() == [cid]
    finally:
        for name in lost:
            labs.restart(cluster.lab, name)
    cluster.healthy()
    cluster.set_label(keep, "w2", "quorum", "back", timeout=10)
    cluster.cli("w1", "rm", "-f", cid)


def test_all_managers_restart_with_their_state(cluster: Cluster) -> None:
    before = cluster.nodes("m1")
    cluster.set_label("m1", "w2", "survives", "restart", timeout=10)
    for name in MANAGERS:
        labs.kill(cluster.lab, name, sig=15)
    for name in MANAGERS:
        labs.restart(cluster.lab, name)
    cluster.healthy()
    after = cluster.nodes("m2")
    assert {h: d["ID"] for h, d in after.items()} == {h: d["ID"] for h, d in before.items()}
    assert cluster.labels("m3", "w2")["survives"] == "restart"


def test_raft_data_is_encrypted_at_rest(cluster: Cluster) -> None:
    sentinel = "plaintext-" + secrets.token_hex(6)
    cluster.set_label("m1", "w2", "at-rest", sentinel, timeout=10)
    wait_for(lambda: cluster.labels("m3", "w2").get("at-rest") == sentinel, timeout=10, what="m3")
    for name in MANAGERS:
        for path in (cluster.lab_data(name) / "swarm").rglob("*"):
            if path.is_file():
                assert sentinel.encode() not in path.read_bytes(), path


def test_autolock_keeps_a_restarted_manager_locked_until_unlocked(cluster: Cluster) -> None:
    out = cluster.cli("m1", "swarm", "update", "--autolock=true")
    key = next(word for word in out.split() if word.startswith("SWMKEY-1-"))
    assert cluster.cli("m2", "swarm", "unlock-key", "-q").strip() == key
    keys = cluster.lab_data("m3") / "swarm" / "manager" / "keys.json"
    wait_for(lambda: json.loads(keys.read_text())["kek"] is None, timeout=10, what="re-wrap")
    labs.kill(cluster.lab, "m3", sig=15)
    labs.restart(cluster.lab, "m3")
    assert cluster.swarm("m3").Info(swarm.Empty()).local_node_state == "locked"
    with pytest.raises(labs.LabError, match="Swarm is encrypted and needs to be unlocked"):
        cluster.cli("m3", "node", "ls")
    host = cluster.lab.host("m3")
    argv, env = labs.command_for(host, [labs._pyswarm(), "swarm", "unlock"])
    wrong = subprocess.run(argv, env=env, input="SWMKEY-1-WRONG\n", capture_output=True, text=True)
    assert wrong.returncode == 1 and "invalid key" in wrong.stderr
    right = subprocess.run(argv, env=env, input=key + "\n", capture_output=True, text=True)
    assert right.returncode == 0, right.stderr
    cluster.healthy()
    cluster.cli("m1", "swarm", "update", "--autolock=false")
    wait_for(lambda: json.loads(keys.read_text())["kek"] is not None, timeout=10, what="unwrap")


def test_acknowledged_writes_survive_a_leader_kill(cluster: Cluster) -> None:
    """History check: concurrent writers record invoke/ok/fail; every ok is everywhere."""
    leader = cluster.leader()
    writers = [m for m in MANAGERS if m != leader]
    history: list[tuple[str, str, str]] = []  # (writer, key, outcome)
    lock = threading.Lock()
    stop = threading.Event()

    killed = threading.Event()

    def write(via: str, target: str) -> None:
        stub = cluster.control(via)
        for i in range(2000):  # bounded; `stop` ends it ~3 s after the kill
            if stop.is_set():
                return
            key = f"h-{via}-{i}"
            after_kill = killed.is_set()
            outcome = "ok"
            try:
                node = stub.GetNode(swarm.NodeRef(node=target), timeout=5)
                spec = objects.NodeSpec()
                spec.CopyFrom(node.spec)
                spec.labels[key] = "1"
                stub.UpdateNode(
                    swarm.UpdateNodeRequest(
                        node_id=node.meta.id, version=node.meta.version, spec=spec
                    ),
                    timeout=5,
                )
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else None
                outcome = "unknown" if code == grpc.StatusCode.DEADLINE_EXCEEDED else "fail"
                stop.wait(0.02)
            with lock:
                history.append((via, key, f"{outcome}-after-kill" if after_kill else outcome))

    threads = [
        threading.Thread(target=write, args=(via, target))
        for via, target in zip(writers, ("w1", "w2"), strict=True)
    ]
    for t in threads:
        t.start()
    wait_for(lambda: len(history) >= 10, timeout=20, what="the first writes")
    labs.kill(cluster.lab, leader)
    killed.set()
    time.sleep(3)  # the writers keep writing through the election and after it
    stop.set()
    for t in threads:
        t.join(timeout=30)
    labs.restart(cluster.lab, leader)
    cluster.healthy()
    acknowledged = {key for _, key, outcome in history if outcome.startswith("ok")}
    outcomes = Counter(outcome for _, _, outcome in history)
    for via in writers:  # each writer got writes through again after the failover
        assert any(w == via and o == "ok-after-kill" for w, _, o in history), outcomes
    for reader in MANAGERS:
        present = set(cluster.labels(reader, "w1")) | set(cluster.labels(reader, "w2"))
        assert acknowledged <= present, (reader, sorted(acknowledged - present))


def test_a_manager_leaving_with_force_leaves_raft_and_can_rejoin(cluster: Cluster) -> None:
    leaver = cluster.leader()  # the hardest case: leadership must move first
    stayer = next(m for m in MANAGERS if m != leaver)
    with pytest.raises(labs.LabError, match="Removing this node leaves 2 managers out of 3"):
        cluster.cli(leaver, "swarm", "leave")
    assert "Node left the swarm." in cluster.cli(leaver, "swarm", "leave", "--force")
    listed = cluster.nodes(stayer)
    assert listed[leaver]["ManagerStatus"] == ""  # out of Raft: listed as a worker
    assert sum(1 for d in listed.values() if d["ManagerStatus"]) == 2
    cluster.set_label(stayer, "w1", "two-managers", "yes", timeout=10)
    cluster.cli(stayer, "node", "rm", "--force", str(listed[leaver]["ID"]))
    token = cluster.cli(stayer, "swarm", "join-token", "-q", "manager").strip()
    addr = cluster.lab.host(leaver).address
    joined = cluster.cli(
        leaver, "swarm", "join", "--token", token, "--advertise-addr", addr,
        f"{cluster.lab.host(stayer).address}:2377",
    )  # fmt: skip
    assert "joined a swarm as a manager" in joined
    cluster.healthy()


def test_force_new_cluster_keeps_the_state(cluster: Cluster) -> None:
    cluster.set_label("m1", "w2", "before", "force", timeout=10)
    for name in ("m2", "m3"):
        labs.kill(cluster.lab, name)
    out = cluster.cli("m1", "swarm", "init", "--force-new-cluster")
    assert "Swarm initialized" in out
    listed = cluster.nodes("m1")
    assert listed["m1"]["ManagerStatus"] == "Leader"
    assert cluster.labels("m1", "w2")["before"] == "force"
    cluster.set_label("m1", "w2", "after", "force", timeout=10)

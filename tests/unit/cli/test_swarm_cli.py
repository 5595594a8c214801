"""`pyswarm swarm` and `pyswarm node` against a fake daemon: an in-process gRPC server on
a unix socket serving Swarm and Control with canned objects, recording what it is sent."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner, Result

import cli.main
from api import objects_pb2 as opb
from api import swarm_pb2 as spb
from api import swarm_pb2_grpc
from cli import swarmclient
from cli.commands import node as node_cmd
from cli.main import MANAGEMENT, Entry

pytestmark = pytest.mark.unit

SELF_ID = "selfnode0000000000000000a"  # 25 characters, as swarmkit's ids
WORKER_ID = "worker00000000000000000bb"
OTHER_ID = "othermgr00000000000000ccc"
NOT_MANAGER = (
    'This node is not a swarm manager. Use "pyswarm swarm init" or "pyswarm swarm join" '
    "to connect this node to swarm and try again."
)
CREATED = 1_700_000_000.25


def make_nodes() -> list[opb.Node]:
    return [
        opb.Node(
            meta=opb.Meta(id=SELF_ID, version=7, created_at=CREATED, updated_at=CREATED + 1),
            spec=opb.NodeSpec(labels={"zone": "a"}, desired_role=opb.MANAGER),
            description=opb.NodeDescription(
                hostname="node10", os="linux", arch="x86_64", nano_cpus=4_000_000_000,
                memory_bytes=8 << 30, engine_version="0.1.0",
            ),
            status=opb.NodeStatus(state=opb.READY, addr="10.0.0.10"),
            manager_status=opb.ManagerStatus(
                raft_addr="10.0.0.10:4242", addr="10.0.0.10:2377", leader=True,
                reachability=opb.REACHABLE,
            ),
            role=opb.MANAGER,
        ),
        opb.Node(
            meta=opb.Meta(id=WORKER_ID, version=3, created_at=CREATED),
            spec=opb.NodeSpec(desired_role=opb.WORKER, availability=opb.ACTIVE),
            description=opb.NodeDescription(hostname="node2", engine_version="0.1.0"),
            status=opb.NodeStatus(state=opb.DOWN, addr="10.0.0.2"),
            role=opb.WORKER,
        ),
        opb.Node(
            meta=opb.Meta(id=OTHER_ID, version=5, created_at=CREATED),
            spec=opb.NodeSpec(desired_role=opb.MANAGER, availability=opb.DRAIN),
            description=opb.NodeDescription(hostname="node1", engine_version="0.1.0"),
            status=opb.NodeStatus(state=opb.READY, addr="10.0.0.1"),
            manager_status=opb.ManagerStatus(
                addr="10.0.0.1:2377", reachability=opb.REACHABLE
            ),
            role=opb.MANAGER,
        ),
    ]  # fmt: skip


class State:
    """The fake daemon's objects, the requests it got, and a failure to answer with."""

    def __init__(self) -> None:
        self.host = ""
        self.nodes = make_nodes()
        self.cluster = opb.Cluster(
            meta=opb.Meta(id="cluster", version=11),
            spec=opb.ClusterSpec(task_history_limit=5, heartbeat_period=5.0),
            root_ca=opb.RootCA(join_tokens=opb.JoinTokens(worker="SWMTKN-W1", manager="SWMTKN-M1")),
        )
        self.info = spb.SwarmInfo(
            local_node_state="active", node_id=SELF_ID, node_addr="10.0.0.10",
            control_available=True,
        )  # fmt: skip
        self.unlock_key = "SWMKEY-1-abc"
        self.requests: list[tuple[str, Any]] = []
        self.fail: tuple[grpc.StatusCode, str] | None = None

    def called(self, method: str) -> list[Any]:
        return [request for name, request in self.requests if name == method]

    def record(self, method: str, request: Any, context: grpc.ServicerContext) -> None:
        self.requests.append((method, request))
        if self.fail is not None:
            context.abort(*self.fail)

    def find(self, ref: str, context: grpc.ServicerContext) -> opb.Node:
        for n in self.nodes:
            if ref in (n.meta.id, n.description.hostname) or n.meta.id.startswith(ref):
                return n
        context.abort(grpc.StatusCode.NOT_FOUND, f"node {ref} not found")
        raise AssertionError  # abort raises


class FakeSwarm(swarm_pb2_grpc.SwarmServicer):
    def __init__(self, state: State) -> None:
        self.state = state

    def Init(self, request, context):
        self.state.record("Init", request, context)
        key = self.state.unlock_key if request.autolock else ""
        return spb.InitResponse(node_id=SELF_ID, unlock_key=key)

    def Join(self, request, context):
        self.state.record("Join", request, context)
        role = opb.MANAGER if request.token.startswith("SWMTKN-M") else opb.WORKER
        return spb.JoinResponse(node_id=WORKER_ID, role=role)

    def Leave(self, request, context):
        self.state.record("Leave", request, context)
        return spb.Empty()

    def Unlock(self, request, context):
        self.state.record("Unlock", request, context)
        return spb.Empty()

    def Info(self, request, context):
        return self.state.info


class FakeControl(swarm_pb2_grpc.ControlServicer):
    def __init__(self, state: State) -> None:
        self.state = state

    def ListNodes(self, request, context):
        self.state.record("ListNodes", request, context)
        return spb.NodeList(nodes=self.state.nodes)

    def GetNode(self, request, context):
        self.state.record("GetNode", request, context)
        return self.state.find(request.node, context)

    def UpdateNode(self, request, context):
        self.state.record("UpdateNode", request, context)
        n = self.state.find(request.node_id, context)
        n.spec.CopyFrom(request.spec)
        n.meta.version += 1
        return n

    def RemoveNode(self, request, context):
        self.state.record("RemoveNode", request, context)
        return spb.Empty()

    def GetCluster(self, request, context):
        self.state.record("GetCluster", request, context)
        return self.state.cluster

    def UpdateCluster(self, request, context):
        self.state.record("UpdateCluster", request, context)
        cluster = self.state.cluster
        cluster.spec.CopyFrom(request.spec)
        cluster.meta.version += 1
        if request.rotate_worker_token:
            cluster.root_ca.join_tokens.worker = "SWMTKN-W2"
        if request.rotate_manager_token:
            cluster.root_ca.join_tokens.manager = "SWMTKN-M2"
        if request.rotate_unlock_key:
            self.state.unlock_key = "SWMKEY-1-rotated"
        return cluster

    def GetUnlockKey(self, request, context):
        self.state.record("GetUnlockKey", request, context)
        return spb.UnlockKey(key=self.state.unlock_key if self.state.cluster.spec.autolock else "")


@pytest.fixture(autouse=True)
def swarm_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    """The root table's entries for `swarm` and `node` (cli.main lists them)."""
    lazy = cli.main.cli.lazy
    monkeypatch.setitem(
        lazy, "swarm", Entry("cli.commands.swarm:swarm", "Manage swarm", MANAGEMENT)
    )
    monkeypatch.setitem(
        lazy, "node", Entry("cli.commands.node:node", "Manage Swarm nodes", MANAGEMENT)
    )


@pytest.fixture
def daemon() -> Iterator[State]:
    # A short directory: a unix socket path must fit in 108 bytes, pytest's tmp_path may not.
    directory = Path(tempfile.mkdtemp(prefix="pyswarm-cli-"))
    state = State()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    swarm_pb2_grpc.add_SwarmServicer_to_server(FakeSwarm(state), server)
    swarm_pb2_grpc.add_ControlServicer_to_server(FakeControl(state), server)  # type: ignore[abstract]
    sock = directory / "d.sock"
    server.add_insecure_port(f"unix://{sock}")
    server.start()
    state.host = f"unix://{sock}"
    try:
        yield state
    finally:
        server.stop(None)
        shutil.rmtree(directory, ignore_errors=True)


def run(state: State | None, *args: str, stdin: str | None = None) -> Result:
    host = state.host if state is not None else "unix:///nonexistent/pyswarm.sock"
    return CliRunner().invoke(cli.main.cli, ["-H", host, *args], input=stdin, prog_name="pyswarm")


def one_line(text: str) -> str:
    assert text.count("\n") == 1, text
    return text.strip()


# ---- pure parts ---------------------------------------------------------------------


def test_enum_names_follow_the_proto():
    assert (
        tuple(opb.NodeRole.Name(v).lower() for v in sorted(opb.NodeRole.values()))
        == swarmclient.ROLES
    )
    assert (
        tuple(opb.Availability.Name(v).lower() for v in sorted(opb.Availability.values()))
        == swarmclient.AVAILABILITIES
    )
    assert (
        tuple(opb.NodeState.Name(v).lower() for v in sorted(opb.NodeState.values()))
        == swarmclient.STATES
    )
    reach = [opb.Reachability.Name(v) for v in sorted(opb.Reachability.values())]
    assert (
        tuple(name.removeprefix("REACHABILITY_").lower() for name in reach)
        == swarmclient.REACHABILITIES
    )


def test_addresses_and_times():
    assert swarmclient.with_port("10.0.0.1", 2377) == "10.0.0.1:2377"
    assert swarmclient.with_port("10.0.0.1:4000", 2377) == "10.0.0.1:4000"
    assert swarmclient.with_port("fd00::1", 2377) == "[fd00::1]:2377"
    assert swarmclient.with_port("[fd00::1]:1", 2377) == "[fd00::1]:1"
    assert node_cmd.go_json_time(CREATED) == "2023-11-14T22:13:20.25Z"
    assert node_cmd.go_json_time(1_700_000_000.0) == "2023-11-14T22:13:20Z"
    assert node_cmd.go_time_string(CREATED) == "2023-11-14 22:13:20.25 +0000 UTC"
    assert node_cmd.natural_key("node2") < node_cmd.natural_key("node10")


# ---- node ---------------------------------------------------------------------------


def test_node_ls_table_sorts_by_hostname_and_marks_self(daemon):
    res = run(daemon, "node", "ls")
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split("   ")[0] == "ID"
    for header in ("HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS", "ENGINE VERSION"):
        assert header in lines[0]
    assert [line.split()[0] for line in lines[1:]] == [OTHER_ID, WORKER_ID, SELF_ID]
    assert lines[3].startswith(f"{SELF_ID} *")
    assert lines[1].startswith(f"{OTHER_ID}  ") and "*" not in lines[1]
    assert lines[1].split() == [OTHER_ID, "node1", "Ready", "Drain", "Reachable", "0.1.0"]
    assert lines[2].split() == [WORKER_ID, "node2", "Down", "Active", "0.1.0"]
    assert lines[3].split() == [SELF_ID, "*", "node10", "Ready", "Active", "Leader", "0.1.0"]
    # the columns line up: HOSTNAME starts where every hostname does
    column = lines[0].index("HOSTNAME")
    assert all(line[column:].startswith("node") for line in lines[1:])


def test_node_ls_json_and_quiet(daemon):
    res = run(daemon, "node", "ls", "--format", "json")
    assert res.exit_code == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["Hostname"] for r in rows] == ["node1", "node2", "node10"]
    assert set(rows[0]) == {
        "ID", "Hostname", "Status", "Availability", "ManagerStatus", "Self", "EngineVersion",
    }  # fmt: skip
    assert rows[2] == {
        "ID": SELF_ID, "Hostname": "node10", "Status": "Ready", "Availability": "Active",
        "ManagerStatus": "Leader", "Self": True, "EngineVersion": "0.1.0",
    }  # fmt: skip
    assert rows[1]["Self"] is False and rows[1]["ManagerStatus"] == ""
    res = run(daemon, "node", "ls", "-q")
    assert res.stdout.splitlines() == [OTHER_ID, WORKER_ID, SELF_ID]


def test_node_ls_filters(daemon):
    res = run(daemon, "node", "ls", "-q", "-f", "role=manager")
    assert res.stdout.splitlines() == [OTHER_ID, SELF_ID]
    res = run(daemon, "node", "ls", "-q", "--filter", "id=work", "-f", "id=self")
    assert res.stdout.splitlines() == [WORKER_ID, SELF_ID]
    res = run(daemon, "node", "ls", "-q", "-f", "name=node2", "-f", "role=manager")
    assert res.stdout == ""
    res = run(daemon, "node", "ls", "-q", "-f", "node.label=zone=a")
    assert res.stdout.splitlines() == [SELF_ID]
    res = run(daemon, "node", "ls", "-f", "color=red")
    assert res.exit_code == 1
    assert one_line(res.stderr) == (
        'pyswarm: invalid argument "color=red" for "-f, --filter" flag: invalid filter \'color\''
    )


def test_node_inspect_is_dockers_json(daemon):
    res = run(daemon, "node", "inspect", "self", "node2")
    assert res.exit_code == 0, res.stderr
    docs = json.loads(res.stdout)
    assert [d["ID"] for d in docs] == [SELF_ID, WORKER_ID]
    assert docs[0] == {
        "ID": SELF_ID,
        "Version": {"Index": 7},
        "CreatedAt": "2023-11-14T22:13:20.25Z",
        "UpdatedAt": "2023-11-14T22:13:21.25Z",
        "Spec": {"Labels": {"zone": "a"}, "Role": "manager", "Availability": "active"},
        "Description": {
            "Hostname": "node10",
            "Platform": {"Architecture": "x86_64", "OS": "linux"},
            "Resources": {"NanoCPUs": 4_000_000_000, "MemoryBytes": 8 << 30},
            "Engine": {"EngineVersion": "0.1.0"},
        },
        "Status": {"State": "ready", "Addr": "10.0.0.10"},
        "ManagerStatus": {"Leader": True, "Reachability": "reachable", "Addr": "10.0.0.10:2377"},
    }
    assert "ManagerStatus" not in docs[1] and docs[1]["Status"]["State"] == "down"
    assert daemon.called("GetNode")[0].node == SELF_ID  # `self` is resolved with Info


def test_node_inspect_missing_prints_what_it_can(daemon):
    res = run(daemon, "node", "inspect", "node1", "nope")
    assert res.exit_code == 1
    assert [d["ID"] for d in json.loads(res.stdout)] == [OTHER_ID]
    assert one_line(res.stderr) == "Error: No such node: nope"


def test_node_inspect_pretty(daemon):
    res = run(daemon, "node", "inspect", "--pretty", "node10")
    assert res.exit_code == 0, res.stderr
    text = res.stdout
    assert text.startswith(f"ID:\t\t\t{SELF_ID}\nLabels:\n - zone=a\nHostname:")
    for part in (
        "Joined at:             \t2023-11-14 22:13:20.25 +0000 utc\n",
        "Status:\n State:\t\t\tReady\n Availability:         \tActive\n Address:\t\t10.0.0.10\n",
        "Manager Status:\n Address:\t\t10.0.0.10:2377\n Raft Status:\t\tReachable\n"
        " Leader:\t\tYes\n",
        "Platform:\n Operating System:\tlinux\n Architecture:\t\tx86_64\n",
        "Resources:\n CPUs:\t\t\t4\n Memory:\t\t8GiB\n",
        "Engine Version:\t\t0.1.0\n",
    ):
        assert part in text


def test_node_update_labels_and_availability(daemon):
    res = run(
        daemon, "node", "update", "--label-add", "rack=r1", "--label-add", "ssd",
        "--label-rm", "zone", "--availability", "drain", "node10",
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert res.stdout == "node10\n"
    (request,) = daemon.called("UpdateNode")
    assert request.node_id == SELF_ID and request.version == 7
    assert dict(request.spec.labels) == {"rack": "r1", "ssd": ""}
    assert request.spec.availability == opb.DRAIN
    assert request.spec.desired_role == opb.MANAGER  # untouched


def test_node_update_role_and_bad_label_rm(daemon):
    res = run(daemon, "node", "update", "--role", "manager", "node2")
    assert res.exit_code == 0, res.stderr
    assert daemon.called("UpdateNode")[0].spec.desired_role == opb.MANAGER
    res = run(daemon, "node", "update", "--label-rm", "nope", "node1")
    assert res.exit_code == 1
    assert one_line(res.stderr) == "key nope doesn't exist in node's labels"
    assert len(daemon.called("UpdateNode")) == 1
    res = run(daemon, "node", "update", "--availability", "asleep", "node1")
    assert res.exit_code == 1 and 'invalid availability "asleep"' in one_line(res.stderr)


def test_promote_and_demote(daemon):
    res = run(daemon, "node", "promote", "node2", "node1")
    assert res.exit_code == 0, res.stderr
    assert res.stdout == (
        f"Node node2 promoted to a manager in the swarm.\nNode {OTHER_ID} is already a manager.\n"
    )
    (request,) = daemon.called("UpdateNode")
    assert (request.node_id, request.version) == (WORKER_ID, 3)
    assert request.spec.desired_role == opb.MANAGER
    res = run(daemon, "node", "demote", "node1")
    assert res.stdout == "Manager node1 demoted in the swarm.\n"
    assert daemon.called("UpdateNode")[1].spec.desired_role == opb.WORKER
    res = run(daemon, "node", "demote", "nope")
    assert res.exit_code == 1 and one_line(res.stderr) == "Error: No such node: nope"


def test_node_rm_and_ps(daemon):
    res = run(daemon, "node", "rm", "--force", "node2", "nope")
    assert res.exit_code == 1
    assert res.stdout == "node2\n"
    assert one_line(res.stderr) == "Error: No such node: nope"
    (request,) = daemon.called("RemoveNode")
    assert request.node_id == WORKER_ID and request.force
    res = run(daemon, "node", "remove", "node1")  # docker's alias
    assert res.exit_code == 0 and res.stdout == "node1\n"
    res = run(daemon, "node", "ps")
    assert res.exit_code == 0, res.stderr
    assert res.stdout.split() == [
        "ID", "NAME", "IMAGE", "NODE", "DESIRED", "STATE", "CURRENT", "STATE", "ERROR", "PORTS",
    ]  # fmt: skip
    res = run(daemon, "node", "ps", "nope")
    assert res.exit_code == 1 and res.stdout == ""
    assert one_line(res.stderr) == "Error: No such node: nope"


def test_not_a_manager_is_one_line(daemon):
    daemon.fail = (grpc.StatusCode.FAILED_PRECONDITION, NOT_MANAGER)
    for args in (("node", "ls"), ("swarm", "join-token", "worker"), ("node", "promote", "x")):
        res = run(daemon, *args)
        assert res.exit_code == 1
        assert one_line(res.stderr) == f"Error response from daemon: {NOT_MANAGER}"
        assert res.stdout == ""


def test_missing_daemon():
    res = run(None, "node", "ls")
    assert res.exit_code == 1
    assert one_line(res.stderr) == (
        "Cannot connect to the pyswarm daemon at unix:///nonexistent/pyswarm.sock. "
        "Is the daemon running?"
    )


# ---- swarm --------------------------------------------------------------------------


def test_init_prints_the_join_command(daemon):
    res = run(daemon, "swarm", "init", "--advertise-addr", "10.0.0.10")
    assert res.exit_code == 0, res.stderr
    assert res.stdout == (
        f"Swarm initialized: current node ({SELF_ID}) is now a manager.\n\n"
        "To add a worker to this swarm, run the following command:\n\n"
        "    pyswarm swarm join --token SWMTKN-W1 10.0.0.10:2377\n\n"
        "To add a manager to this swarm, run 'pyswarm swarm join-token manager' "
        "and follow the instructions.\n\n"
    )
    (request,) = daemon.called("Init")
    assert request.advertise_addr == "10.0.0.10" and request.listen_addr == "0.0.0.0:2377"
    assert request.dispatcher_heartbeat == 5.0 and request.cert_expiry == 2160 * 3600.0
    assert request.task_history_limit == 5 and request.default_addr_pool_mask_length == 24
    assert not request.autolock and request.availability == opb.ACTIVE


def test_init_flags_and_autolock(daemon):
    res = run(
        daemon, "swarm", "init", "--listen-addr", "10.0.0.10", "--default-addr-pool",
        "10.20.0.0/16", "--default-addr-pool", "10.30.0.0/16", "--default-addr-pool-mask-length",
        "26", "--dispatcher-heartbeat", "1m30s", "--cert-expiry", "1h", "--task-history-limit",
        "2", "--autolock", "--force-new-cluster", "--availability", "drain",
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    (request,) = daemon.called("Init")
    assert request.listen_addr == "10.0.0.10:2377"
    assert list(request.default_addr_pool) == ["10.20.0.0/16", "10.30.0.0/16"]
    assert request.default_addr_pool_mask_length == 26
    assert (request.dispatcher_heartbeat, request.cert_expiry) == (90.0, 3600.0)
    assert request.task_history_limit == 2 and request.autolock and request.force_new_cluster
    assert request.availability == opb.DRAIN
    assert res.stdout.endswith(
        "To unlock a swarm manager after it restarts, run the `pyswarm swarm unlock`\n"
        "command and provide the following key:\n\n    SWMKEY-1-abc\n\n"
        "Please remember to store this key in a password manager, since without it you\n"
        "will not be able to restart the manager.\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--dispatcher-heartbeat", "5x"],
            'invalid argument "5x" for "--dispatcher-heartbeat" flag: time: invalid duration "5x"',
        ),
        (["--cert-expiry", "soon"], 'for "--cert-expiry" flag: time: invalid duration "soon"'),
        (["--default-addr-pool", "10.0.0.0"], "invalid CIDR address: 10.0.0.0"),
        (["--availability", "off"], 'invalid availability "off"'),
    ],
)
def test_init_usage_errors(args, message):
    res = run(None, "swarm", "init", *args)
    assert res.exit_code == 1
    assert message in one_line(res.stderr)
    assert res.stdout == ""


def test_join_and_leave(daemon):
    res = run(daemon, "swarm", "join", "--token", "SWMTKN-W1", "10.0.0.10:2377")
    assert res.exit_code == 0, res.stderr
    assert res.stdout == "This node joined a swarm as a worker.\n"
    (request,) = daemon.called("Join")
    assert (request.token, request.remote_addr) == ("SWMTKN-W1", "10.0.0.10:2377")
    assert request.listen_addr == "0.0.0.0:2377"
    res = run(daemon, "swarm", "join", "--token", "SWMTKN-M1", "--availability", "pause", "m:2377")
    assert res.stdout == "This node joined a swarm as a manager.\n"
    assert daemon.called("Join")[1].availability == opb.PAUSE
    res = run(daemon, "swarm", "join", "10.0.0.10:2377")
    assert res.exit_code == 1 and "Missing option '--token'" in one_line(res.stderr)
    res = run(daemon, "swarm", "leave", "--force")
    assert res.stdout == "Node left the swarm.\n"
    assert daemon.called("Leave")[0].force


def test_join_token(daemon):
    res = run(daemon, "swarm", "join-token", "-q", "worker")
    assert res.exit_code == 0, res.stderr
    assert res.stdout == "SWMTKN-W1\n"
    res = run(daemon, "swarm", "join-token", "manager")
    assert res.stdout == (
        "To add a manager to this swarm, run the following command:\n\n"
        "    pyswarm swarm join --token SWMTKN-M1 10.0.0.10:2377\n\n"
    )
    assert not daemon.called("UpdateCluster")
    res = run(daemon, "swarm", "join-token", "bogus")
    assert res.exit_code == 1 and one_line(res.stderr) == "pyswarm: unknown role bogus"


def test_join_token_rotate(daemon):
    res = run(daemon, "swarm", "join-token", "--rotate", "worker")
    assert res.exit_code == 0, res.stderr
    assert res.stdout == (
        "Successfully rotated worker join token.\n\n"
        "To add a worker to this swarm, run the following command:\n\n"
        "    pyswarm swarm join --token SWMTKN-W2 10.0.0.10:2377\n\n"
    )
    (request,) = daemon.called("UpdateCluster")
    assert request.version == 11 and request.rotate_worker_token
    assert not request.rotate_manager_token and request.spec.task_history_limit == 5
    res = run(daemon, "swarm", "join-token", "-q", "--rotate", "manager")
    assert res.stdout == "SWMTKN-M2\n"
    assert daemon.called("UpdateCluster")[1].rotate_manager_token


def test_swarm_update(daemon):
    res = run(daemon, "swarm", "update", "--task-history-limit", "10", "--cert-expiry", "48h")
    assert res.exit_code == 0, res.stderr
    assert res.stdout == "Swarm updated.\n"
    (request,) = daemon.called("UpdateCluster")
    assert request.version == 11
    assert request.spec.task_history_limit == 10 and request.spec.node_cert_expiry == 48 * 3600
    assert request.spec.heartbeat_period == 5.0 and not request.spec.autolock  # kept
    res = run(daemon, "swarm", "update", "--autolock")
    assert res.stdout.startswith("Swarm updated.\nTo unlock a swarm manager after it restarts")
    assert "    SWMKEY-1-abc\n" in res.stdout
    assert daemon.called("UpdateCluster")[1].spec.autolock
    res = run(daemon, "swarm", "update", "--autolock=false")
    assert res.stdout == "Swarm updated.\n"
    assert not daemon.called("UpdateCluster")[2].spec.autolock


def test_unlock_key(daemon):
    res = run(daemon, "swarm", "unlock-key")
    assert res.exit_code == 1 and one_line(res.stderr) == "no unlock key is set"
    res = run(daemon, "swarm", "unlock-key", "--rotate")
    assert one_line(res.stderr) == "cannot rotate because autolock is not turned on"
    daemon.cluster.spec.autolock = True
    res = run(daemon, "swarm", "unlock-key", "-q")
    assert res.stdout == "SWMKEY-1-abc\n"
    res = run(daemon, "swarm", "unlock-key", "--rotate")
    assert res.exit_code == 0, res.stderr
    assert res.stdout.startswith(
        "Successfully rotated manager unlock key.\n\nTo unlock a swarm manager"
    )
    assert "    SWMKEY-1-rotated\n" in res.stdout
    assert daemon.called("UpdateCluster")[0].rotate_unlock_key


def test_unlock_reads_the_key_from_stdin(daemon):
    res = run(daemon, "swarm", "unlock", stdin="SWMKEY-1-abc\n")
    assert res.exit_code == 1 and one_line(res.stderr) == "Error: swarm is not locked"
    daemon.info.local_node_state = "locked"
    res = run(daemon, "swarm", "unlock", stdin="  SWMKEY-1-abc\n")
    assert res.exit_code == 0, res.stderr
    assert res.stdout == ""
    assert daemon.called("Unlock")[0].key == "SWMKEY-1-abc"
    daemon.info.local_node_state = "inactive"
    res = run(daemon, "swarm", "unlock", stdin="x\n")
    assert one_line(res.stderr) == "Error: This node is not part of a swarm"


def test_every_command_has_help():
    from cli.commands.node import node
    from cli.commands.swarm import swarm

    for group in (swarm, node):
        assert group.help
        for name, command in group.commands.items():
            assert command.help, name
            for param in command.params:
                if param.param_type_name == "option":
                    assert param.help, f"{name} {param.opts}"
    res = run(None, "swarm", "init", "--help")
    assert res.exit_code == 0 and "--dispatcher-heartbeat" in res.stdout
    res = run(None, "node")
    assert res.exit_code == 0 and "promote" in res.stdout

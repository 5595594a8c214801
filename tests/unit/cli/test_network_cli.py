"""`pyswarm network` without a real daemon: the documents and rows as pure functions of
hand-built protos, flag parsing and its one-line errors, and the commands end to end
against an in-process gRPC server on a unix socket whose Control service is the real
`LocalControl` forwarding to a fake manager (so the client methods and the forwarding
are exercised too)."""

from __future__ import annotations

import hashlib
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
from api import errors, swarm_pb2_grpc
from api import objects_pb2 as opb
from api import swarm_pb2 as spb
from cli.commands import network as net_cmd
from cli.localcontrol import LocalControl

pytestmark = pytest.mark.unit

CREATED = 1_700_000_000.25
NET_ID = "frontnet000000000000000aa"
BACK_ID = "backnet0000000000000000bb"
INGRESS_ID = "ingressnet0000000000000cc"
NODE1, NODE2 = "node1000000000000000000n1", "node2000000000000000000n2"
NOT_IN_SWARM = 'This node is not a swarm manager. Use "pyswarm swarm init" ...'


def network(
    net_id: str = NET_ID,
    name: str = "front",
    *,
    vni: int = 4097,
    subnet: str = "10.0.1.0/24",
    gateway: str = "10.0.1.1",
    **spec: Any,
) -> opb.Network:
    return opb.Network(
        meta=opb.Meta(id=net_id, version=3, created_at=CREATED),
        spec=opb.NetworkSpec(name=name, driver="overlay", **spec),
        vni=vni,
        subnet=subnet,
        gateway=gateway,
    )


def node(node_id: str, hostname: str, addr: str) -> opb.Node:
    return opb.Node(
        meta=opb.Meta(id=node_id),
        description=opb.NodeDescription(hostname=hostname),
        status=opb.NodeStatus(addr=addr),
    )


def service(svc_id: str, name: str, vips: dict[str, str], ports: list[opb.PortConfig]) -> Any:
    return opb.Service(
        meta=opb.Meta(id=svc_id),
        spec=opb.ServiceSpec(name=name),
        endpoint=opb.Endpoint(
            ports=ports,
            virtual_ips=[opb.VirtualIP(network_id=k, addr=v) for k, v in vips.items()],
        ),
    )


def task(
    task_id: str, svc: opb.Service, slot: int, node_id: str, nets: dict[str, str], state: int
) -> opb.Task:
    return opb.Task(
        meta=opb.Meta(id=task_id),
        service_id=svc.meta.id,
        service_name=svc.spec.name,
        slot=slot,
        node_id=node_id,
        status=opb.TaskStatus(state=state),  # type: ignore[arg-type]
        networks=[
            opb.NetworkAttachment(network=opb.Network(meta=opb.Meta(id=k)), addresses=[v])
            for k, v in nets.items()
        ],
    )


def cluster() -> tuple[list[opb.Service], list[opb.Task], list[opb.Node]]:
    web = service(
        "websvc",
        "web",
        {NET_ID: "10.0.1.2/24", INGRESS_ID: "10.0.0.5/24"},
        [opb.PortConfig(protocol="tcp", target_port=80, published_port=8080)],
    )
    db = service("dbsvc", "db", {BACK_ID: "10.0.2.2/24"}, [])
    tasks = [
        task("t1", web, 1, NODE1, {NET_ID: "10.0.1.3/24", INGRESS_ID: "10.0.0.6/24"}, 7),
        task("t2", web, 2, NODE2, {NET_ID: "10.0.1.4/24"}, 7),
        task("t0", web, 1, NODE2, {NET_ID: "10.0.1.9/24"}, opb.TASK_SHUTDOWN),  # history
        task("t3", db, 1, NODE2, {BACK_ID: "10.0.2.3/24"}, opb.TASK_RUNNING),
    ]
    nodes = [node(NODE1, "alpha", "192.168.1.1"), node(NODE2, "beta", "192.168.1.2")]
    return [web, db], tasks, nodes


# ---- pure parts ---------------------------------------------------------------------


def test_inspect_document_is_dockers_shape():
    net = network(options={"mtu": "1400"}, labels={"tier": "front"}, attachable=True)
    net.spec.ipam.ip_range = "10.0.1.128/25"
    doc = net_cmd.network_doc(net)
    assert doc == {
        "Name": "front",
        "Id": NET_ID,
        "Created": "2023-11-14T22:13:20.25Z",
        "Scope": "swarm",
        "Driver": "overlay",
        "EnableIPv6": False,
        "IPAM": {
            "Driver": "default",
            "Options": None,
            "Config": [
                {"Subnet": "10.0.1.0/24", "Gateway": "10.0.1.1", "IPRange": "10.0.1.128/25"}
            ],
        },
        "Internal": False,
        "Attachable": True,
        "Ingress": False,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": None,
        "Options": {"com.docker.network.driver.overlay.vxlanid_list": "4097", "mtu": "1400"},
        "Labels": {"tier": "front"},
    }
    assert list(doc) == list(json.loads(json.dumps(doc)))  # docker's key order survives
    bare = net_cmd.network_doc(network(subnet="", gateway="", vni=0))
    assert bare["IPAM"]["Config"] == [] and bare["Options"] == {}


def test_verbose_services_and_peers():
    services, tasks, nodes = cluster()
    doc = net_cmd.verbose_doc(network(), services, tasks, nodes)
    assert doc == {
        "Services": {
            "web": {
                "VIP": "10.0.1.2",
                "Ports": [],
                "LocalLBIndex": 0,
                "Tasks": [
                    {
                        "Name": "web.1.t1",
                        "EndpointID": "t1",
                        "EndpointIP": "10.0.1.3",
                        "Info": {"Host IP": "192.168.1.1"},
                    },
                    {
                        "Name": "web.2.t2",
                        "EndpointID": "t2",
                        "EndpointIP": "10.0.1.4",
                        "Info": {"Host IP": "192.168.1.2"},
                    },
                ],
            }
        },
        "Peers": [{"Name": "alpha", "IP": "192.168.1.1"}, {"Name": "beta", "IP": "192.168.1.2"}],
    }
    back = net_cmd.verbose_doc(network(BACK_ID, "back"), services, tasks, nodes)
    assert list(back["Services"]) == ["db"] and back["Peers"] == [
        {"Name": "beta", "IP": "192.168.1.2"}
    ]
    ingress = net_cmd.verbose_doc(network(INGRESS_ID, "ingress", ingress=True), *cluster())
    assert ingress["Services"]["web"]["Ports"] == ["Target: 80, Publish: 8080"]
    assert [p["Name"] for p in ingress["Peers"]] == ["alpha", "beta"]  # every node
    empty = net_cmd.verbose_doc(network("other", "other"), services, tasks, nodes)
    assert empty == {"Services": {}, "Peers": []}


def test_ls_table_lists_builtins_and_swarm_networks_by_name():
    entries = net_cmd.ls_entries([network(), network(BACK_ID, "back")])
    lines = net_cmd.ls_lines([e.row for e in entries], fmt=None, quiet=False, no_trunc=False)
    bridge_id = hashlib.sha256(b"bridge").hexdigest()
    assert lines[0].splitlines() == [
        "NETWORK ID     NAME      DRIVER    SCOPE",
        "backnet00000   back      overlay   swarm",
        f"{bridge_id[:12]}   bridge    bridge    local",
        "frontnet0000   front     overlay   swarm",
        f"{hashlib.sha256(b'host').hexdigest()[:12]}   host      host      local",
        f"{hashlib.sha256(b'none').hexdigest()[:12]}   none      null      local",
    ]
    quiet = net_cmd.ls_lines([e.row for e in entries], fmt=None, quiet=True, no_trunc=True)
    assert quiet[1] == bridge_id and quiet[0] == BACK_ID
    local_only = net_cmd.ls_entries(None)
    assert [e.row["Name"] for e in local_only] == ["bridge", "host", "none"]


def test_ls_json_uses_dockers_fields_as_strings():
    net = network(labels={"b": "2", "a": "1"}, internal=True)
    (line,) = net_cmd.ls_lines([net_cmd.ls_row(net)], fmt="json", quiet=False, no_trunc=False)
    assert json.loads(line) == {
        "ID": "frontnet0000",
        "Name": "front",
        "Driver": "overlay",
        "Scope": "swarm",
        "Internal": "true",
        "IPv6": "false",
        "Labels": "a=1,b=2",
        "CreatedAt": "2023-11-14 22:13:20.25 +0000 UTC",
    }
    (line,) = net_cmd.ls_lines(
        [net_cmd.ls_row(net)], fmt="{{.Name}} {{.Driver}}", quiet=False, no_trunc=False
    )
    assert line == "front overlay"


@pytest.mark.parametrize(
    ("filters", "names"),
    [
        ([("name", "ro")], ["front"]),
        ([("name", "o")], ["front", "host", "none"]),
        ([("driver", "overlay")], ["back", "front"]),
        ([("driver", "overlay"), ("driver", "null")], ["back", "front", "none"]),
        ([("id", "backnet")], ["back"]),
        ([("scope", "local")], ["bridge", "host", "none"]),
        ([("type", "custom")], ["back", "front"]),
        ([("type", "builtin"), ("name", "h")], ["host"]),
        ([("label", "tier")], ["back", "front"]),
        ([("label", "tier=a,b")], ["back"]),
        ([("label", "tier=front")], ["front"]),
    ],
)
def test_ls_filters(filters, names):
    nets = [
        network(labels={"tier": "front"}),
        network(BACK_ID, "back", labels={"tier": "a,b"}),
    ]
    found = [e.row["Name"] for e in net_cmd.ls_entries(nets) if net_cmd.ls_matches(e, filters)]
    assert found == names


def test_build_spec_and_its_checks():
    spec = net_cmd.build_spec(
        "front",
        subnet="10.0.9.0/24",
        gateway="10.0.9.254",
        ip_range="10.0.9.128/25",
        attachable=True,
        internal=True,
        options=[("mtu", "1400")],
        labels=[("a", "1")],
    )
    assert (spec.name, spec.driver, spec.attachable, spec.internal) == (
        "front",
        "overlay",
        True,
        True,
    )
    assert (spec.ipam.subnet, spec.ipam.gateway, spec.ipam.ip_range) == (
        "10.0.9.0/24",
        "10.0.9.254",
        "10.0.9.128/25",
    )
    assert dict(spec.options) == {"mtu": "1400"} and dict(spec.labels) == {"a": "1"}
    assert net_cmd.build_spec("x", driver="bridge").driver == "bridge"  # the manager refuses
    with pytest.raises(ValueError, match="must have a corresponding subnet"):
        net_cmd.build_spec("x", gateway="10.0.0.1")


def test_parsers():
    assert net_cmd.parse_subnet("10.0.9.0/24") == "10.0.9.0/24"
    assert net_cmd.parse_option("mtu=1400") == ("mtu", "1400")
    assert net_cmd.parse_option("flag=") == ("flag", "")
    for bad in ("10.0.9.1/24", "10.0.0.0/33", "fd00::/64", "", "10.0.0.0/24\n", "a.b.c.d/8"):
        with pytest.raises(ValueError, match="invalid subnet"):
            net_cmd.parse_subnet(bad)
    for bad in ("mtu", "=1400", " =x", ""):
        with pytest.raises(ValueError, match="invalid option format"):
            net_cmd.parse_option(bad)


def test_inspect_format_template():
    doc = net_cmd.network_doc(network(labels={"a": "1"}))
    assert net_cmd.render("{{.Name}} {{.Id}}", doc) == f"front {NET_ID}"
    assert net_cmd.render("{{json .IPAM.Config}}", doc) == (
        '[{"Subnet":"10.0.1.0/24","Gateway":"10.0.1.1"}]'
    )
    assert net_cmd.render("{{.Internal}} {{.Labels}} {{.IPAM.Options}}", doc) == (
        "false map[a:1] <nil>"
    )
    assert json.loads(net_cmd.render("{{json .}}", doc)) == doc
    with pytest.raises(ValueError, match="can't evaluate field Nope"):
        net_cmd.render("{{.Nope}}", doc)


def test_prune_text():
    assert net_cmd.prune_text([]) == ""
    assert net_cmd.prune_text(["a", "b"]) == "Deleted Networks:\na\nb\n\n"


# ---- the commands against a fake daemon ---------------------------------------------


class State:
    def __init__(self) -> None:
        self.host = ""
        self.networks = [network(), network(BACK_ID, "back")]
        self.services, self.tasks, self.nodes = cluster()
        self.in_swarm = True
        self.requests: list[tuple[str, Any]] = []

    def called(self, method: str) -> list[Any]:
        return [r for name, r in self.requests if name == method]

    def find(self, ref: str, context: grpc.ServicerContext) -> opb.Network:
        for n in self.networks:
            if ref in (n.meta.id, n.spec.name) or n.meta.id.startswith(ref):
                return n
        context.abort(grpc.StatusCode.NOT_FOUND, f"network {ref} not found")
        raise AssertionError


class FakeManager:
    """The manager's Control methods that network commands reach (via LocalControl)."""

    def __init__(self, state: State) -> None:
        self.state = state

    def CreateNetwork(self, request, context):
        self.state.requests.append(("CreateNetwork", request))
        if request.driver != "overlay":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "only the overlay driver is supported")
        return network("newnet", request.name)

    def GetNetwork(self, request, context):
        return self.state.find(request.ref, context)

    def ListNetworks(self, request, context):
        return spb.NetworkList(networks=self.state.networks)

    def RemoveNetwork(self, request, context):
        found = self.state.find(request.ref, context)
        if found.spec.name == "back":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "network back is in use")
        self.state.requests.append(("RemoveNetwork", request))
        return spb.Empty()

    def PruneNetworks(self, request, context):
        self.state.requests.append(("PruneNetworks", request))
        return spb.PruneNetworksResponse(deleted=["front"])

    def ListServices(self, request, context):
        return spb.ServiceList(services=[spb.ServiceInfo(service=s) for s in self.state.services])

    def ListTasks(self, request, context):
        return spb.TaskList(tasks=self.state.tasks)

    def ListNodes(self, request, context):
        return spb.NodeList(nodes=self.state.nodes)


class FakeNode:
    def __init__(self, state: State) -> None:
        self.state = state

    def local_control(self) -> Any:
        if not self.state.in_swarm:
            raise errors.Conflict(NOT_IN_SWARM)
        return FakeManager(self.state)


@pytest.fixture
def daemon() -> Iterator[State]:
    directory = Path(tempfile.mkdtemp(prefix="pyswarm-net-"))  # short: a socket path
    state = State()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    control = LocalControl(FakeNode(state))  # type: ignore[arg-type]
    swarm_pb2_grpc.add_ControlServicer_to_server(control, server)
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


def test_help_lists_the_commands():
    res = run(None, "network", "--help")
    assert res.exit_code == 0
    for name in ("create", "inspect", "ls", "prune", "rm"):
        assert f"\n  {name} " in res.stdout
    assert "\n  network " in run(None, "--help").stdout
    for name in ("create", "ls", "inspect", "rm", "prune"):
        command = net_cmd.network.commands[name]
        assert command.help, name
        for param in command.params:
            if param.param_type_name == "option":
                assert param.help, f"{name} {param.opts}"


def test_create_sends_the_spec_and_prints_the_id(daemon):
    res = run(
        daemon, "network", "create", "--subnet", "10.0.9.0/24", "--gateway", "10.0.9.1",
        "--attachable", "-o", "mtu=1400", "--label", "a=1", "front2",
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert res.stdout == "newnet\n"
    (spec,) = daemon.called("CreateNetwork")
    assert spec.name == "front2" and spec.driver == "overlay" and spec.attachable
    assert spec.ipam.subnet == "10.0.9.0/24" and dict(spec.options) == {"mtu": "1400"}
    res = run(daemon, "network", "create", "-d", "bridge", "x")
    assert res.exit_code == 1
    assert one_line(res.stderr) == (
        "Error response from daemon: only the overlay driver is supported"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--subnet", "10.0.9.1/24"], 'invalid argument "10.0.9.1/24" for "--subnet" flag: '
         "invalid subnet: 10.0.9.1/24 has host bits set"),
        (["--subnet", "nonsense"], "invalid subnet:"),
        (["--subnet", "10.0.0.0/24; rm -rf /"], "invalid subnet:"),
        (["--gateway", "10.0.0.300", "--subnet", "10.0.0.0/24"], "invalid IP address 10.0.0.300"),
        (["--ip-range", "10.0.0.0/40", "--subnet", "10.0.0.0/24"], "invalid ip-range:"),
        (["-o", "mtu"], "invalid option format: 'mtu' (use KEY=VALUE)"),
        (["--opt", "=1"], "invalid option format"),
        (["--label", "=x"], "invalid label format"),
        (["--gateway", "10.0.0.1"], "every ip-range or gateway must have a corresponding subnet"),
    ],
)  # fmt: skip
def test_create_flag_errors_are_one_line_and_send_nothing(daemon, args, message):
    res = run(daemon, "network", "create", *args, "x")
    assert res.exit_code == 1
    assert message in one_line(res.stderr)
    assert res.stdout == "" and daemon.called("CreateNetwork") == []


def test_ls_against_the_daemon(daemon):
    res = run(daemon, "network", "ls")
    assert res.exit_code == 0, res.stderr
    names = [line.split()[1] for line in res.stdout.splitlines()[1:]]
    assert names == ["back", "bridge", "front", "host", "none"]
    res = run(daemon, "network", "ls", "-q", "-f", "driver=overlay", "--no-trunc")
    assert res.stdout.splitlines() == [BACK_ID, NET_ID]
    res = run(daemon, "network", "ls", "--format", "json", "-f", "name=front")
    assert json.loads(res.stdout)["Scope"] == "swarm"
    daemon.in_swarm = False
    res = run(daemon, "network", "ls", "-q")
    assert res.exit_code == 0 and len(res.stdout.splitlines()) == 3


def test_ls_errors(daemon):
    res = run(daemon, "network", "ls", "-f", "colour=red")
    assert res.exit_code == 1 and "invalid filter 'colour'" in one_line(res.stderr)
    res = run(daemon, "network", "ls", "-f", "type=weird")
    assert res.exit_code == 1 and "invalid filter: 'type'='weird'" in one_line(res.stderr)
    res = run(None, "network", "ls")
    assert res.exit_code == 1 and "Cannot connect to the pyswarm daemon" in one_line(res.stderr)


def test_inspect_prints_what_it_finds_and_dockers_errors(daemon):
    res = run(daemon, "network", "inspect", "front", "nope", "back")
    assert res.exit_code == 1
    assert [d["Name"] for d in json.loads(res.stdout)] == ["front", "back"]
    assert one_line(res.stderr) == "Error: No such network: nope"
    res = run(daemon, "network", "inspect", "-v", "front")
    assert res.exit_code == 0, res.stderr
    (doc,) = json.loads(res.stdout)
    assert [t["EndpointIP"] for t in doc["Services"]["web"]["Tasks"]] == ["10.0.1.3", "10.0.1.4"]
    assert doc["Peers"][0] == {"Name": "alpha", "IP": "192.168.1.1"}
    res = run(daemon, "network", "inspect", "-f", "{{.Name}}={{.Options}}", "front", "back")
    assert res.stdout.splitlines() == [
        "front=map[com.docker.network.driver.overlay.vxlanid_list:4097]",
        "back=map[com.docker.network.driver.overlay.vxlanid_list:4097]",
    ]
    res = run(daemon, "network", "inspect", "-f", "{{.Bogus}}", "front")
    assert res.exit_code == 1 and "can't evaluate field Bogus" in one_line(res.stderr)


def test_rm_prints_names_and_one_line_per_failure(daemon):
    res = run(daemon, "network", "rm", "front", "nope", "back")
    assert res.exit_code == 1
    assert res.stdout == "front\n"
    assert res.stderr.splitlines() == [
        "Error: No such network: nope",
        "Error response from daemon: network back is in use",
    ]
    res = run(daemon, "network", "remove", "front")
    assert res.exit_code == 0 and res.stdout == "front\n"


def test_prune_asks_first(daemon):
    res = run(daemon, "network", "prune", stdin="n\n")
    assert res.exit_code == 0 and daemon.called("PruneNetworks") == []
    assert res.stdout == (
        "WARNING! This will remove all custom networks not used by at least one container.\n"
        "Are you sure you want to continue? [y/N] "
    )
    res = run(daemon, "network", "prune", stdin="y\n")
    assert res.stdout.endswith("[y/N] Deleted Networks:\nfront\n\n")
    res = run(daemon, "network", "prune", "-f")
    assert res.stdout == "Deleted Networks:\nfront\n\n"
    assert len(daemon.called("PruneNetworks")) == 2


def test_not_in_a_swarm_is_one_line_for_swarm_only_commands(daemon):
    daemon.in_swarm = False
    for args in (("create", "x"), ("inspect", "x"), ("rm", "x"), ("prune", "-f")):
        res = run(daemon, "network", *args)
        assert res.exit_code == 1
        assert one_line(res.stderr) == f"Error response from daemon: {NOT_IN_SWARM}"

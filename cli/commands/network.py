"""`pyswarm network`: create, ls, inspect, rm and prune, with docker's flags, columns and
words, over the managers' network RPCs.

Swarm networks (overlay, scope "swarm") live in the managers' store; the client checks
only the syntax of what it sends (a subnet that is no IPv4 network, a `-o` that is no
K=V) and leaves the rest to the managers (a driver other than overlay, overlapping
subnets, a gateway outside its subnet). `ls` also shows docker's three local networks,
`bridge`, `host` and `none`, with ids derived from their names (sha256) so they are
stable; on a node that is not a swarm manager it shows only those.

`inspect -v` adds docker's "Services" and "Peers", built cluster-wide from the tasks
attached to the network (their addresses), the services' VIPs on it and the nodes'
addresses. The documents are pure functions of the objects (`network_doc`,
`verbose_doc`, `ls_row`), so they are tested without a daemon.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import click

from cli import output, parse, serviceclient
from cli.client import DaemonError
from cli.commands import common
from cli.commands.node import go_json_time, go_time_string
from cli.parse import FlagType

if TYPE_CHECKING:
    from api import objects_pb2 as opb
    from api import swarm_pb2 as spb

LS_HEADERS = ("NETWORK ID", "NAME", "DRIVER", "SCOPE")
LS_FILTER_KEYS = ("name", "driver", "id", "scope", "type", "label")
DEFAULT_DRIVER = "overlay"
VXLAN_OPTION = "com.docker.network.driver.overlay.vxlanid_list"
PRUNE_WARNING = "WARNING! This will remove all custom networks not used by at least one container."


class Builtin(NamedTuple):
    """One of docker's local networks, always there on a host."""

    name: str
    driver: str

    @property
    def id(self) -> str:
        return hashlib.sha256(self.name.encode()).hexdigest()


BUILTINS = (Builtin("bridge", "bridge"), Builtin("host", "host"), Builtin("none", "null"))


# ---- flag parsers -----------------------------------------------------------------


def parse_subnet(value: str) -> str:
    """An IPv4 network in CIDR form, host bits clear (`10.0.9.0/24`)."""
    import ipaddress

    try:
        return str(ipaddress.IPv4Network(value, strict=True))
    except ValueError as e:
        raise ValueError(f"invalid subnet: {e}") from None


def parse_ip(value: str) -> str:
    """An IPv4 address (`--gateway`)."""
    import ipaddress

    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError(f"invalid IP address {value}") from None


def parse_ip_range(value: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.IPv4Network(value, strict=True))
    except ValueError as e:
        raise ValueError(f"invalid ip-range: {e}") from None


def parse_option(value: str) -> tuple[str, str]:
    """A driver option `K=V` (`mtu=1400`)."""
    key, sep, val = value.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"invalid option format: '{value}' (use KEY=VALUE)")
    return key.strip(), val


def parse_filter(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep:
        raise ValueError("bad format of filter (expected name=value)")
    if key.lower() not in LS_FILTER_KEYS:
        raise ValueError(f"invalid filter '{key}'")
    if key.lower() == "type" and val not in ("custom", "builtin"):
        raise ValueError(f"invalid filter: 'type'='{val}'")
    return key.lower(), val


SUBNET = FlagType("CIDR", parse_subnet)
IP = FlagType("IP", parse_ip)
IP_RANGE = FlagType("CIDR", parse_ip_range)
OPTION = FlagType("K=V", parse_option)
LABEL = FlagType("K=V", parse.parse_label)
FILTER = FlagType("filter", parse_filter)


def build_spec(
    name: str,
    *,
    driver: str = DEFAULT_DRIVER,
    subnet: str | None = None,
    gateway: str | None = None,
    ip_range: str | None = None,
    attachable: bool = False,
    internal: bool = False,
    ingress: bool = False,
    options: Iterable[tuple[str, str]] = (),
    labels: Iterable[tuple[str, str]] = (),
) -> opb.NetworkSpec:
    """The NetworkSpec of `network create`; ValueError for flags that cannot go together
    (docker's client checks: a gateway or an ip-range needs its subnet)."""
    from api import objects_pb2 as opb

    if (gateway or ip_range) and not subnet:
        raise ValueError("every ip-range or gateway must have a corresponding subnet")
    spec = opb.NetworkSpec(
        name=name,
        driver=driver or DEFAULT_DRIVER,
        attachable=attachable,
        internal=internal,
        ingress=ingress,
        ipam=opb.IPAMConfig(subnet=subnet or "", gateway=gateway or "", ip_range=ip_range or ""),
    )
    spec.options.update(dict(options))
    spec.labels.update(dict(labels))
    return spec


# ---- ls ---------------------------------------------------------------------------


def ls_row(net: opb.Network) -> dict[str, Any]:
    """A swarm network's `ls` row (docker's `--format json` object: strings only)."""
    return {
        "ID": net.meta.id,
        "Name": net.spec.name,
        "Driver": net.spec.driver or DEFAULT_DRIVER,
        "Scope": "swarm",
        "Internal": _bool(net.spec.internal),
        "IPv6": "false",
        "Labels": output.labels_text(net.spec.labels),
        "CreatedAt": go_time_string(net.meta.created_at) if net.meta.created_at else "",
    }


def builtin_row(net: Builtin) -> dict[str, Any]:
    return {
        "ID": net.id,
        "Name": net.name,
        "Driver": net.driver,
        "Scope": "local",
        "Internal": "false",
        "IPv6": "false",
        "Labels": "",
        "CreatedAt": "",  # the daemon does not say when it started
    }


def _bool(value: bool) -> str:
    return "true" if value else "false"


class Listed(NamedTuple):
    """An `ls` row and the labels it was made from (for `-f label=`)."""

    row: dict[str, Any]
    labels: Mapping[str, str]


def ls_entries(networks: Sequence[opb.Network] | None) -> list[Listed]:
    """The built-ins and the swarm's networks (None: not in a swarm), sorted by name."""
    entries = [Listed(builtin_row(b), {}) for b in BUILTINS]
    entries += [Listed(ls_row(n), dict(n.spec.labels)) for n in networks or ()]
    return sorted(entries, key=lambda e: (e.row["Name"], e.row["ID"]))


def ls_matches(entry: Listed, filters: Sequence[tuple[str, str]]) -> bool:
    """docker's `network ls -f`: values of one key are alternatives, keys all apply.
    name: a substring; id: a prefix; driver, scope: exact; type: custom|builtin;
    label: K or K=V."""
    row, labels = entry
    wanted: dict[str, list[str]] = {}
    for key, value in filters:
        wanted.setdefault(key, []).append(value)

    def check(key: str, value: str) -> bool:
        if key == "name":
            return value in str(row["Name"])
        if key == "id":
            return bool(row["ID"].startswith(value))
        if key == "type":
            return bool(row["Scope"] == "local") == (value == "builtin")
        if key == "label":
            name, sep, val = value.partition("=")
            return name in labels and (not sep or labels[name] == val)
        return bool(row["Driver" if key == "driver" else "Scope"] == value)

    return all(any(check(k, v) for v in values) for k, values in wanted.items())


def ls_lines(
    rows: Sequence[Mapping[str, Any]], *, fmt: str | None, quiet: bool, no_trunc: bool
) -> list[str]:
    """What `network ls` prints for `rows`."""
    shown = [dict(r, ID=r["ID"] if no_trunc else output.short_id(r["ID"])) for r in rows]
    if quiet:
        return [r["ID"] for r in shown]
    cells = [[r["ID"], r["Name"], r["Driver"], r["Scope"]] for r in shown]
    return output.format_rows(fmt, LS_HEADERS, shown, cells)


# ---- inspect ----------------------------------------------------------------------


def _addr(cidr: str) -> str:
    """`10.0.1.5/24` -> `10.0.1.5`."""
    return cidr.partition("/")[0]


def network_doc(net: opb.Network) -> dict[str, Any]:
    """docker's `network inspect` document of a swarm network."""
    subnet = net.subnet or net.spec.ipam.subnet
    config: list[dict[str, str]] = []
    if subnet:
        entry = {"Subnet": subnet, "Gateway": net.gateway or net.spec.ipam.gateway}
        if net.spec.ipam.ip_range:
            entry["IPRange"] = net.spec.ipam.ip_range
        config.append(entry)
    options = {VXLAN_OPTION: str(net.vni)} if net.vni else {}
    options.update(sorted(net.spec.options.items()))
    return {
        "Name": net.spec.name,
        "Id": net.meta.id,
        "Created": go_json_time(net.meta.created_at),
        "Scope": "swarm",
        "Driver": net.spec.driver or DEFAULT_DRIVER,
        "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": None, "Config": config},
        "Internal": net.spec.internal,
        "Attachable": net.spec.attachable,
        "Ingress": net.spec.ingress,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": None,
        "Options": options,
        "Labels": dict(net.spec.labels),
    }


def verbose_doc(
    net: opb.Network,
    services: Sequence[opb.Service],
    tasks: Sequence[opb.Task],
    nodes: Sequence[opb.Node],
) -> dict[str, Any]:
    """docker's `inspect -v` additions: "Services" (VIP, ports and tasks on the network,
    by service name) and "Peers" (the nodes with a task on it; all nodes for ingress),
    from the non-terminal tasks attached to `net`."""
    from api.tasks import is_terminal, task_name

    node_by_id = {n.meta.id: n for n in nodes}
    entries: dict[str, dict[str, Any]] = {}
    by_id = {s.meta.id: s for s in services}

    def entry(service_id: str, name: str) -> dict[str, Any]:
        if service_id not in entries:
            svc = by_id.get(service_id)
            vip = ""
            ports: list[str] = []
            if svc is not None:
                vip = next(
                    (
                        _addr(v.addr)
                        for v in svc.endpoint.virtual_ips
                        if v.network_id == net.meta.id
                    ),
                    "",
                )
                if net.spec.ingress:
                    ports = [
                        f"Target: {p.target_port}, Publish: {p.published_port}"
                        for p in svc.endpoint.ports
                        if (p.publish_mode or "ingress") == "ingress" and p.published_port
                    ]
            entries[service_id] = {
                "Name": name,
                "VIP": vip,
                "Ports": ports,
                "LocalLBIndex": 0,
                "Tasks": [],
            }
        return entries[service_id]

    for svc in services:
        if any(v.network_id == net.meta.id for v in svc.endpoint.virtual_ips):
            entry(svc.meta.id, svc.spec.name)
    peers: set[str] = set()
    for task in sorted(tasks, key=task_name):
        if is_terminal(task.status.state):
            continue
        attachment = next((a for a in task.networks if a.network.meta.id == net.meta.id), None)
        if attachment is None:
            continue
        node = node_by_id.get(task.node_id)
        host_ip = node.status.addr if node is not None else ""
        if node is not None:
            peers.add(node.meta.id)
        name = by_id[task.service_id].spec.name if task.service_id in by_id else task.service_name
        entry(task.service_id, name)["Tasks"].append(
            {
                "Name": task_name(task),
                "EndpointID": task.meta.id,
                "EndpointIP": _addr(attachment.addresses[0]) if attachment.addresses else "",
                "Info": {"Host IP": host_ip},
            }
        )
    if net.spec.ingress:
        peers = set(node_by_id)
    services_doc = {
        e.pop("Name"): e for e in sorted(entries.values(), key=lambda e: str(e["Name"]))
    }
    peer_list = sorted(
        (node_by_id[p] for p in peers), key=lambda n: (n.description.hostname, n.meta.id)
    )
    return {
        "Services": services_doc,
        "Peers": [{"Name": n.description.hostname, "IP": n.status.addr} for n in peer_list],
    }


_FIELD = re.compile(r"\{\{\s*(json\s+)?\.([\w.]*)\s*\}\}")


def render(fmt: str, doc: Mapping[str, Any]) -> str:
    """`inspect --format`: `{{.Name}}`, `{{.IPAM.Config}}`, `{{json .Options}}`,
    `{{json .}}` (a small subset of Go templates: fields, dotted paths and json)."""

    def value(match: re.Match[str]) -> str:
        as_json, path = match.group(1), match.group(2)
        current: Any = doc
        for part in [p for p in path.split(".") if p]:
            if not isinstance(current, Mapping) or part not in current:
                raise ValueError(f"template: can't evaluate field {part}")
            current = current[part]
        if as_json:
            return json.dumps(current, ensure_ascii=False, separators=(",", ":"))
        return _go_text(current)

    return _FIELD.sub(value, fmt.replace("\\t", "\t").replace("\\n", "\n"))


def _go_text(value: Any) -> str:
    """Go's fmt of a JSON value: `true`, `<nil>`, `map[k:v]`, `[a b]`."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return _bool(value)
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{k}:{_go_text(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, list):
        return "[" + " ".join(_go_text(v) for v in value) + "]"
    return str(value)


# ---- the commands -----------------------------------------------------------------


@click.group(cls=common.ObjectGroup)
def network() -> None:
    """Manage networks."""


@network.command("create")
@click.option(
    "-d",
    "--driver",
    default=DEFAULT_DRIVER,
    show_default=True,
    help="Driver to manage the Network (swarm networks: overlay).",
)
@click.option("--subnet", type=SUBNET, help="Subnet in CIDR format (e.g. 10.0.9.0/24).")
@click.option("--gateway", type=IP, help="IPv4 Gateway for the master subnet.")
@click.option("--ip-range", type=IP_RANGE, help="Allocate container ip from a sub-range.")
@click.option("--attachable", is_flag=True, help="Enable manual container attachment.")
@click.option("--internal", is_flag=True, help="Restrict external access to the network.")
@click.option("--ingress", is_flag=True, help="Create swarm routing-mesh network.")
@click.option(
    "-o", "--opt", "opts", multiple=True, type=OPTION, help="Set driver specific options (mtu=N)."
)
@click.option("--label", multiple=True, type=LABEL, help="Set metadata on a network.")
@click.argument("name", metavar="NETWORK")
def create(
    driver: str,
    subnet: str | None,
    gateway: str | None,
    ip_range: str | None,
    attachable: bool,
    internal: bool,
    ingress: bool,
    opts: tuple[tuple[str, str], ...],
    label: tuple[tuple[str, str], ...],
    name: str,
) -> None:
    """Create a network."""
    try:
        spec = build_spec(
            name,
            driver=driver,
            subnet=subnet,
            gateway=gateway,
            ip_range=ip_range,
            attachable=attachable,
            internal=internal,
            ingress=ingress,
            options=opts,
            labels=label,
        )
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    with serviceclient.current() as client:
        click.echo(client.create_network(spec).meta.id)


def swarm_networks(client: serviceclient.ServiceClient) -> list[opb.Network] | None:
    """The swarm's networks, or None when this node cannot list them (not in a swarm,
    or not a manager): docker's `ls` then shows the local networks only."""
    try:
        return client.list_networks()
    except DaemonError as e:
        if e.status == "FAILED_PRECONDITION":
            return None
        raise


@network.command("ls")
@common.quiet_option
@click.option("--no-trunc", is_flag=True, help="Do not truncate the output.")
@click.option(
    "-f",
    "--filter",
    "filters",
    multiple=True,
    type=FILTER,
    help="Provide filter values (e.g. name=front, driver=overlay, id=, scope=, "
    "type=custom|builtin, label=).",
)
@common.format_option
def ls(quiet: bool, no_trunc: bool, filters: tuple[tuple[str, str], ...], fmt: str | None) -> None:
    """List networks."""
    with serviceclient.current() as client:
        networks = swarm_networks(client)
    rows = [e.row for e in ls_entries(networks) if ls_matches(e, filters)]
    try:
        lines = ls_lines(rows, fmt=fmt, quiet=quiet, no_trunc=no_trunc)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    for line in lines:
        click.echo(line)


@network.command("inspect")
@click.option(
    "-f",
    "--format",
    "fmt",
    help="Format the output using the given Go template (e.g. '{{.Id}}', '{{json .IPAM}}').",
)
@click.option("-v", "--verbose", is_flag=True, help="Verbose output for diagnostics.")
@click.argument("refs", metavar="NETWORK...", nargs=-1, required=True)
def inspect(fmt: str | None, verbose: bool, refs: tuple[str, ...]) -> None:
    """Display detailed information on one or more networks."""
    with serviceclient.current() as client:
        found, errors = common.fetch_each(refs, client.get_network)
        docs = [network_doc(n) for n in found]
        if verbose and found:
            services, tasks, nodes = _cluster_view(client)
            for doc, net in zip(docs, found, strict=True):
                doc.update(verbose_doc(net, services, tasks, nodes))
    if fmt:
        try:
            lines = [render(fmt, d) for d in docs]
        except ValueError as e:
            raise click.UsageError(str(e)) from None
        for line in lines:
            click.echo(line)
    else:
        click.echo(output.json_array(docs))
    sys.exit(common.show_errors(errors))


def _cluster_view(
    client: serviceclient.ServiceClient,
) -> tuple[list[opb.Service], list[opb.Task], list[opb.Node]]:
    infos: list[spb.ServiceInfo] = client.list_services()
    return [i.service for i in infos], client.list_tasks(), client.list_nodes()


@network.command("rm")
@click.argument("refs", metavar="NETWORK...", nargs=-1, required=True)
def rm(refs: tuple[str, ...]) -> None:
    """Remove one or more networks."""
    with serviceclient.current() as client:
        sys.exit(common.each(refs, client.remove_network))


@network.command("prune")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
def prune(force: bool) -> None:
    """Remove all unused networks."""
    if not (force or common.confirm(PRUNE_WARNING)):
        return
    with serviceclient.current() as client:
        deleted = client.prune_networks()
    click.echo(prune_text(deleted), nl=False)


def prune_text(deleted: Sequence[str]) -> str:
    """docker's prune output: `Deleted Networks:`, the names and a blank line; nothing
    when none was removed."""
    if not deleted:
        return ""
    return "Deleted Networks:\n" + "".join(f"{name}\n" for name in deleted) + "\n"

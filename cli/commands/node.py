"""`pyswarm node`: ls, inspect, update, promote, demote, rm and ps, with docker's flags,
columns and words. Managers answer them (the Control API); a worker's daemon says
"This node is not a swarm manager. ...", printed as it comes.

A NODE is an id, an id prefix or a hostname; `self` is the local node. Updates read the
node, change its spec and write it back at the version read (the managers refuse a
stale one).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import click

from cli import output, parse, swarmclient
from cli.client import CliError
from cli.commands import common
from cli.parse import FlagType
from cli.swarmclient import AVAILABILITIES, REACHABILITIES, ROLES, STATES

if TYPE_CHECKING:
    from api import objects_pb2 as opb

LS_HEADERS = ("ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS", "ENGINE VERSION")
LS_COLUMNS = ("Hostname", "Status", "Availability", "ManagerStatus", "EngineVersion")
PS_HEADERS = (
    "ID", "NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR", "PORTS",
)  # fmt: skip
FILTER_KEYS = ("id", "name", "role", "node.label", "membership")
NANO = 1_000_000_000


# ---- flag parsers -----------------------------------------------------------------


def parse_filter(value: str) -> tuple[str, str]:
    """`key=value` of `node ls -f`: id, name, role, node.label, membership."""
    key, sep, val = value.partition("=")
    if not sep:
        raise ValueError("bad format of filter (expected name=value)")
    key = key.strip().lower()
    if key not in FILTER_KEYS:
        raise ValueError(f"invalid filter '{key}'")
    if key == "role" and val not in ROLES:
        raise ValueError(f"invalid role filter value '{val}'")
    return key, val


def parse_role(value: str) -> int:
    if value.lower() not in ROLES:
        raise ValueError(f"invalid role {value}, only worker and manager are supported")
    return ROLES.index(value.lower())


FILTER = FlagType("filter", parse_filter)
ROLE = FlagType("worker|manager", parse_role)
AVAILABILITY = FlagType("active|pause|drain", swarmclient.parse_availability)
LABEL = FlagType("K=V", parse.parse_label)


# ---- commands ---------------------------------------------------------------------


@click.group(cls=common.ObjectGroup)
def node() -> None:
    """Manage Swarm nodes."""


@node.command("ls")
@common.quiet_option
@click.option(
    "-f",
    "--filter",
    "filters",
    multiple=True,
    type=FILTER,
    help="Filter output based on conditions provided (id=, name=, role=manager|worker, "
    "node.label=, membership=).",
)
@common.format_option
def ls(quiet: bool, filters: tuple[tuple[str, str], ...], fmt: str | None) -> None:
    """List nodes in the swarm."""
    with swarmclient.current() as client:
        nodes = client.list_nodes()
        self_id = client.info().node_id
    nodes = sorted(
        (n for n in nodes if matches(n, filters)),
        key=lambda n: (natural_key(n.description.hostname), n.meta.id),
    )
    if quiet:
        for n in nodes:
            click.echo(n.meta.id)
        return
    rows = [node_row(n, self_id=self_id) for n in nodes]
    cells = [
        [f"{row['ID']} {'*' if row['Self'] else ' '}", *(str(row[c]) for c in LS_COLUMNS)]
        for row in rows
    ]
    common.print_rows(fmt, LS_HEADERS, rows, cells)


@node.command("inspect")
@click.option("--pretty", is_flag=True, help="Print the information in a human friendly format.")
@click.argument("refs", metavar="NODE...", nargs=-1, required=True)
@click.pass_context
def inspect(ctx: click.Context, pretty: bool, refs: tuple[str, ...]) -> None:
    """Display detailed information on one or more nodes."""
    with swarmclient.current() as client:
        found, errors = common.fetch_each(refs, client.get_node)
    if pretty:
        for n in found:
            click.echo(pretty_text(n))
    else:
        click.echo(output.json_array([node_doc(n) for n in found]))
    ctx.exit(common.show_errors(errors))


@node.command("update")
@click.option(
    "--availability",
    type=AVAILABILITY,
    help='Availability of the node ("active", "pause", "drain").',
)
@click.option(
    "--label-add", multiple=True, type=LABEL, help="Add or update a node label (key=value)."
)
@click.option("--label-rm", multiple=True, metavar="KEY", help="Remove a node label if exists.")
@click.option("--role", type=ROLE, help='Role of the node ("worker", "manager").')
@click.argument("ref", metavar="NODE")
def update(
    availability: int | None,
    label_add: tuple[tuple[str, str], ...],
    label_rm: tuple[str, ...],
    role: int | None,
    ref: str,
) -> None:
    """Update a node."""
    with swarmclient.current() as client:
        current = client.get_node(ref)
        spec = current.spec
        if role is not None:
            spec.desired_role = role  # type: ignore[assignment]  # a NodeRole value
        if availability is not None:
            spec.availability = availability  # type: ignore[assignment]  # an Availability
        for key, value in label_add:
            spec.labels[key] = value
        for key in label_rm:
            if key not in spec.labels:
                raise CliError(f"key {key} doesn't exist in node's labels")
            del spec.labels[key]
        client.update_node(current.meta.id, version=current.meta.version, spec=spec)
    click.echo(ref)


@node.command("promote")
@click.argument("refs", metavar="NODE...", nargs=-1, required=True)
def promote(refs: tuple[str, ...]) -> None:
    """Promote one or more nodes to manager in the swarm."""
    change_roles(refs, manager=True)


@node.command("demote")
@click.argument("refs", metavar="NODE...", nargs=-1, required=True)
def demote(refs: tuple[str, ...]) -> None:
    """Demote one or more nodes from manager in the swarm."""
    change_roles(refs, manager=False)


@node.command("rm")
@click.option("-f", "--force", is_flag=True, help="Force remove a node from the swarm.")
@click.argument("refs", metavar="NODE...", nargs=-1, required=True)
@click.pass_context
def rm(ctx: click.Context, force: bool, refs: tuple[str, ...]) -> None:
    """Remove one or more nodes from the swarm."""
    with swarmclient.current() as client:

        def remove(ref: str) -> None:
            client.remove_node(client.get_node(ref).meta.id, force=force)

        ctx.exit(common.each(refs, remove))


@node.command("ps")
@click.option(
    "-f", "--filter", "filters", multiple=True, help="Filter output based on conditions provided."
)
@common.format_option
@click.option("--no-resolve", is_flag=True, help="Do not map IDs to Names.")
@click.option("--no-trunc", is_flag=True, help="Do not truncate output.")
@click.option("-q", "--quiet", is_flag=True, help="Only display task IDs.")
@click.argument("refs", metavar="[NODE...]", nargs=-1)
@click.pass_context
def ps(
    ctx: click.Context,
    filters: tuple[str, ...],
    fmt: str | None,
    no_resolve: bool,
    no_trunc: bool,
    quiet: bool,
    refs: tuple[str, ...],
) -> None:
    """List tasks running on one or more nodes, defaults to current node."""
    with swarmclient.current() as client:
        _, errors = common.fetch_each(refs or (swarmclient.SELF,), client.get_node)
    tasks: list[dict[str, Any]] = []  # tasks come with services
    if (not errors or tasks) and not quiet:
        common.print_rows(fmt, PS_HEADERS, tasks, [])
    ctx.exit(common.show_errors(errors))


# ---- actions --------------------------------------------------------------------


def change_roles(refs: Sequence[str], *, manager: bool) -> None:
    """docker's promote/demote: stop at the first failure; skip a node already there."""
    role = ROLES.index("manager" if manager else "worker")
    with swarmclient.current() as client:
        for ref in refs:
            current = client.get_node(ref)
            if current.spec.desired_role == role:
                click.echo(f"Node {current.meta.id} is already a {ROLES[role]}.")
                continue
            current.spec.desired_role = role  # type: ignore[assignment]  # a NodeRole value
            client.update_node(current.meta.id, version=current.meta.version, spec=current.spec)
            if manager:
                click.echo(f"Node {ref} promoted to a manager in the swarm.")
            else:
                click.echo(f"Manager {ref} demoted in the swarm.")


def matches(n: opb.Node, filters: Sequence[tuple[str, str]]) -> bool:
    """docker's node filters: values of one key are alternatives, keys all apply."""
    wanted: dict[str, list[str]] = {}
    for key, value in filters:
        wanted.setdefault(key, []).append(value)
    checks: dict[str, Callable[[str], bool]] = {
        "id": lambda v: n.meta.id.startswith(v),
        "name": lambda v: v in n.description.hostname or v == n.spec.name,
        "role": lambda v: ROLES[n.role] == v,
        "membership": lambda v: v == "accepted",
        "node.label": lambda v: label_matches(n.spec.labels, v),
    }
    return all(any(checks[key](v) for v in values) for key, values in wanted.items())


def label_matches(labels: Any, value: str) -> bool:
    key, sep, val = value.partition("=")
    return key in labels and (not sep or labels[key] == val)


def natural_key(text: str) -> list[tuple[int, int, str]]:
    """Natural order, as docker's sortorder.NaturalLess: node2 before node10."""
    return [
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in re.split(r"(\d+)", text)
        if part
    ]


def title(word: str) -> str:
    """docker's PrettyPrint: the first letter upper case, the rest lower."""
    return word[:1].upper() + word[1:].lower()


def manager_status(n: opb.Node) -> str:
    if not n.HasField("manager_status"):
        return ""
    if n.manager_status.leader:
        return "Leader"
    return title(REACHABILITIES[n.manager_status.reachability])


def node_row(n: opb.Node, *, self_id: str) -> dict[str, Any]:
    """A `node ls` row with docker's field names."""
    return {
        "ID": n.meta.id,
        "Hostname": n.description.hostname,
        "Status": title(STATES[n.status.state]),
        "Availability": title(AVAILABILITIES[n.spec.availability]),
        "ManagerStatus": manager_status(n),
        "Self": n.meta.id == self_id,
        "EngineVersion": n.description.engine_version,
    }


def go_json_time(timestamp: float) -> str:
    """Go's RFC3339Nano in UTC, as docker's JSON times: `2017-05-16T22:52:44.99106Z`."""
    return _go_time(timestamp, "%Y-%m-%dT%H:%M:%S") + "Z"


def go_time_string(timestamp: float) -> str:
    """Go's time.String() in UTC, as docker's `Joined at`: `2017-05-16 22:52:44.99 +0000 UTC`."""
    return _go_time(timestamp, "%Y-%m-%d %H:%M:%S") + " +0000 UTC"


def _go_time(timestamp: float, fmt: str) -> str:
    import time

    micros = round(timestamp * 1_000_000)  # a double holds no more
    seconds, fraction = divmod(micros, 1_000_000)
    digits = f"{fraction:06d}".rstrip("0")
    return time.strftime(fmt, time.gmtime(seconds)) + (f".{digits}" if digits else "")


def node_doc(n: opb.Node) -> dict[str, Any]:
    """docker's `node inspect` document."""
    spec: dict[str, Any] = {"Name": n.spec.name} if n.spec.name else {}
    spec |= {
        "Labels": dict(n.spec.labels),
        "Role": ROLES[n.spec.desired_role],
        "Availability": AVAILABILITIES[n.spec.availability],
    }
    status: dict[str, Any] = {"State": STATES[n.status.state]}
    if n.status.message:
        status["Message"] = n.status.message
    status["Addr"] = n.status.addr
    doc: dict[str, Any] = {
        "ID": n.meta.id,
        "Version": {"Index": n.meta.version},
        "CreatedAt": go_json_time(n.meta.created_at),
        "UpdatedAt": go_json_time(n.meta.updated_at),
        "Spec": spec,
        "Description": {
            "Hostname": n.description.hostname,
            "Platform": {"Architecture": n.description.arch, "OS": n.description.os},
            "Resources": {
                "NanoCPUs": n.description.nano_cpus,
                "MemoryBytes": n.description.memory_bytes,
            },
            "Engine": {"EngineVersion": n.description.engine_version},
        },
        "Status": status,
    }
    if n.HasField("manager_status"):
        doc["ManagerStatus"] = {
            "Leader": n.manager_status.leader,
            "Reachability": REACHABILITIES[n.manager_status.reachability],
            "Addr": n.manager_status.addr,
        }
    return doc


def pretty_text(n: opb.Node) -> str:
    """docker's `node inspect --pretty` (its template's tabs included)."""
    lines = [f"ID:\t\t\t{n.meta.id}"]
    if n.spec.name:
        lines.append(f"Name:\t\t\t{n.spec.name}")
    if n.spec.labels:
        lines.append("Labels:")
        lines += [f" - {k}={v}" if v else f" - {k}" for k, v in sorted(n.spec.labels.items())]
    lines += [
        f"Hostname:              \t{n.description.hostname}",
        f"Joined at:             \t{title(go_time_string(n.meta.created_at))}",
        "Status:",
        f" State:\t\t\t{title(STATES[n.status.state])}",
    ]
    if n.status.message:
        lines.append(f" Message:              \t{title(n.status.message)}")
    lines.append(f" Availability:         \t{title(AVAILABILITIES[n.spec.availability])}")
    if n.status.addr:
        lines.append(f" Address:\t\t{n.status.addr}")
    if n.HasField("manager_status"):
        lines += [
            "Manager Status:",
            f" Address:\t\t{n.manager_status.addr}",
            f" Raft Status:\t\t{title(REACHABILITIES[n.manager_status.reachability])}",
            f" Leader:\t\t{'Yes' if n.manager_status.leader else 'No'}",
        ]
    lines += [
        "Platform:",
        f" Operating System:\t{n.description.os}",
        f" Architecture:\t\t{n.description.arch}",
        "Resources:",
        f" CPUs:\t\t\t{n.description.nano_cpus // NANO}",
        f" Memory:\t\t{output.bytes_size(n.description.memory_bytes)}",
        f"Engine Version:\t\t{n.description.engine_version}",
    ]
    return "\n".join(lines)

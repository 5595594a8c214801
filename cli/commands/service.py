"""`pyswarm service`: create, ls, ps, inspect, update, scale, rollback, rm and logs, with
docker's flags, columns and words, over the managers' Control API.

create/update/scale/rollback print the service (id or name), then, unless `-d`, follow
convergence (`cli.progress`) and exit 1 if the update paused or rolled back. Flags become
a ServiceSpec in `cli.servicespec`; tables and documents come from `service_output`.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import click

from cli import output, parse, progress, serviceclient
from cli import servicespec as ss
from cli.client import CliError, DaemonError
from cli.commands import common
from cli.commands import service_flags as sf
from cli.commands import service_output as so
from cli.parse import FlagType
from cli.serviceclient import NoSuchObject, NoSuchService, ServiceClient

if TYPE_CHECKING:
    from api import objects_pb2 as opb
    from api import swarm_pb2 as spb

LS_FILTER_KEYS = ("id", "name", "label", "mode")
PS_FILTER_KEYS = ("id", "name", "node", "desired-state")
DESIRED_STATES = ("running", "shutdown", "accepted")


def parse_filter(keys: Sequence[str]) -> FlagType[tuple[str, str]]:
    def parser(value: str) -> tuple[str, str]:
        key, sep, val = value.partition("=")
        if not sep:
            raise ValueError("bad format of filter (expected name=value)")
        if key.lower() not in keys:
            raise ValueError(f"invalid filter '{key}'")
        if key == "desired-state" and val not in DESIRED_STATES:
            raise ValueError(f"invalid filter 'desired-state={val}'")
        return key.lower(), val

    return FlagType("filter", parser)


class CreateCommand(click.Command):
    """Option parsing stops at IMAGE, so `create busybox ls -l` passes `-l` on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("context_settings", {}).update(allow_interspersed_args=False)
        super().__init__(*args, **kwargs)


@click.group(cls=common.ObjectGroup)
def service() -> None:
    """Manage Swarm services."""


# ---- create / update ----------------------------------------------------------------


@service.command("create", cls=CreateCommand)
@sf.apply(sf.CREATE + sf.COMMON)
@click.argument("image")
@click.argument("args", metavar="[COMMAND] [ARG...]", nargs=-1)
def create(image: str, args: tuple[str, ...], **flags: Any) -> None:
    """Create a new service."""
    sys.exit(create_service(image, args, flags))


@service.command("update")
@sf.apply(sf.UPDATE + sf.COMMON)
@click.argument("ref", metavar="SERVICE")
def update(ref: str, **flags: Any) -> None:
    """Update a service."""
    sys.exit(update_service(ref, flags))


def resolver(client: ServiceClient) -> ss.Resolver:
    """Secret and config names -> (id, name), as docker's client resolves them."""

    def resolve(kind: str, name: str) -> tuple[str, str]:
        try:
            found = client.get_secret(name) if kind == "secret" else client.get_config(name)
        except NoSuchObject:
            raise ValueError(f"{kind} not found: {name}") from None
        return found.meta.id, found.spec.name

    return resolve


def create_service(image: str, args: Sequence[str], flags: Mapping[str, Any]) -> int:
    with serviceclient.current() as client:
        try:
            spec = ss.build_spec(image, args, flags, resolver(client))
        except ValueError as e:
            raise CliError(str(e)) from None
        created = client.create_service(spec)
        click.echo(created.meta.id)
        if flags.get("detach") or flags.get("quiet"):
            return 0
        return converge(client, created, created=True)


def update_service(ref: str, flags: Mapping[str, Any]) -> int:
    with serviceclient.current() as client:
        current = client.get_service(ref)
        stale = current.update_status
        if flags.get("rollback"):
            updated = client.update_service(
                current.meta.id, version=current.meta.version, rollback=True
            )
        else:
            try:
                spec = ss.merge_update(current.spec, flags, resolver(client))
            except ValueError as e:
                raise CliError(str(e)) from None
            updated = client.update_service(
                current.meta.id, version=current.meta.version, spec=spec
            )
        click.echo(ref)
        if flags.get("detach") or flags.get("quiet"):
            return 0
        return converge(client, updated, rollback=bool(flags.get("rollback")), stale=stale)


def converge(
    client: ServiceClient,
    svc: opb.Service,
    *,
    created: bool = False,
    rollback: bool = False,
    stale: opb.UpdateStatus | None = None,
) -> int:
    """Follow `svc` to convergence; 1 (message on stderr) if its update paused or rolled
    back; Ctrl-C leaves it be, with docker's hint."""
    from api import objects_pb2 as opb

    def fetch() -> progress.Snapshot:
        current = client.get_service(svc.meta.id)
        tasks = client.list_tasks(services=[svc.meta.id])
        nodes = None
        if current.spec.mode in (opb.GLOBAL, opb.GLOBAL_JOB):
            nodes = [
                n
                for n in client.list_nodes()
                if n.status.state == opb.READY and n.spec.availability == opb.ACTIVE
            ]
        return progress.Snapshot(current, tasks, nodes)

    display = progress.Display(sys.stdout, tty=sys.stdout.isatty())
    verify = progress.verify_period(svc, created=created)
    result = progress.watch(fetch, display, verify=verify, rollback=rollback, stale=stale)
    if result.interrupted:
        click.echo(progress.interrupted_hint(svc.spec.name or svc.meta.id))
        return 0
    if result.error:
        click.echo(result.error, err=True)
        return 1
    return 0


@service.command("scale")
@click.option("-d", "--detach", is_flag=True, help="Exit immediately instead of waiting.")
@click.argument(
    "pairs",
    metavar="SERVICE=REPLICAS...",
    nargs=-1,
    required=True,
    type=FlagType("SERVICE=REPLICAS", ss.parse_scale),
)
def scale(detach: bool, pairs: tuple[tuple[str, int], ...]) -> None:
    """Scale one or multiple replicated services."""
    sys.exit(scale_services(pairs, detach=detach))


def scale_services(pairs: Sequence[tuple[str, int]], *, detach: bool) -> int:
    failed = 0
    with serviceclient.current() as client:
        for name, replicas in pairs:
            try:
                current = client.get_service(name)
                try:
                    spec = ss.scale_spec(current.spec, replicas)
                except ValueError as e:
                    raise CliError(f"{name}: {e}") from None
                updated = client.update_service(
                    current.meta.id, version=current.meta.version, spec=spec
                )
            except CliError as e:
                e.show()
                failed = 1
                continue
            click.echo(f"{name} scaled to {replicas}")
            if not detach:
                failed |= converge(client, updated, stale=current.update_status)
    return failed


@service.command("rollback")
@click.option("-d", "--detach", is_flag=True, help="Exit immediately instead of waiting.")
@click.option("-q", "--quiet", is_flag=True, help="Suppress progress output.")
@click.argument("ref", metavar="SERVICE")
def rollback(detach: bool, quiet: bool, ref: str) -> None:
    """Revert changes to a service's configuration."""
    sys.exit(update_service(ref, {"rollback": True, "detach": detach, "quiet": quiet}))


@service.command("rm")
@click.argument("refs", metavar="SERVICE...", nargs=-1, required=True)
def rm(refs: tuple[str, ...]) -> None:
    """Remove one or more services."""
    with serviceclient.current() as client:
        sys.exit(common.each(refs, client.remove_service))


# ---- ls / ps / inspect ------------------------------------------------------------


@service.command("ls")
@common.quiet_option
@click.option(
    "-f",
    "--filter",
    "filters",
    multiple=True,
    type=parse_filter(LS_FILTER_KEYS),
    help="Filter output based on conditions provided (id=, name=, label=, mode=).",
)
@common.format_option
def ls(quiet: bool, filters: tuple[tuple[str, str], ...], fmt: str | None) -> None:
    """List services."""
    with serviceclient.current() as client:
        infos = [i for i in client.list_services() if so.ls_matches(i, filters)]
    print_services(infos, quiet=quiet, fmt=fmt)


def print_services(infos: Sequence[spb.ServiceInfo], *, quiet: bool, fmt: str | None) -> None:
    """docker's `service ls` table (or ids, or JSON lines), by name."""
    infos = sorted(infos, key=lambda i: (i.service.spec.name, i.service.meta.id))
    if quiet:
        for info in infos:
            click.echo(info.service.meta.id)
        return
    rows = [so.ls_row(i) for i in infos]
    cells = [
        [str(row[c]) for c in ("ID", "Name", "Mode", "Replicas", "Image", "Ports")] for row in rows
    ]
    common.print_rows(fmt, so.LS_HEADERS, rows, cells)


@service.command("ps")
@click.option(
    "-f",
    "--filter",
    "filters",
    multiple=True,
    type=parse_filter(PS_FILTER_KEYS),
    help="Filter output based on conditions provided (id=, name=, node=, "
    "desired-state=running|shutdown|accepted).",
)
@common.format_option
@click.option("--no-resolve", is_flag=True, help="Do not map IDs to Names.")
@click.option("--no-trunc", is_flag=True, help="Do not truncate output.")
@click.option("-q", "--quiet", is_flag=True, help="Only display task IDs.")
@click.argument("refs", metavar="SERVICE...", nargs=-1, required=True)
def ps(
    filters: tuple[tuple[str, str], ...],
    fmt: str | None,
    no_resolve: bool,
    no_trunc: bool,
    quiet: bool,
    refs: tuple[str, ...],
) -> None:
    """List the tasks of one or more services."""
    sys.exit(
        list_tasks(refs, filters, fmt=fmt, no_resolve=no_resolve, no_trunc=no_trunc, quiet=quiet)
    )


def list_tasks(
    refs: Sequence[str],
    filters: Sequence[tuple[str, str]],
    *,
    fmt: str | None,
    no_resolve: bool,
    no_trunc: bool,
    quiet: bool,
) -> int:
    tasks: list[opb.Task] = []
    with serviceclient.current() as client:
        services, errors = common.fetch_each(refs, client.get_service)
        ids = [s.meta.id for s in services]
        if ids:
            tasks = client.list_tasks(services=ids)
        hostnames = (
            {} if no_resolve else {n.meta.id: n.description.hostname for n in client.list_nodes()}
        )
    tasks = [t for t in tasks if task_matches(t, filters, hostnames)]
    if quiet:
        for task in so.sort_tasks(tasks):
            click.echo(task.meta.id)
    elif ids:
        rows = so.ps_rows(tasks, hostnames, now=time.time(), no_trunc=no_trunc)
        common.print_rows(fmt, so.PS_HEADERS, rows, so.ps_cells(rows))
    return common.show_errors(errors)


def task_matches(
    task: opb.Task, filters: Sequence[tuple[str, str]], hostnames: Mapping[str, str]
) -> bool:
    """docker's `service ps -f`: values of one key are alternatives, keys all apply."""
    from api import objects_pb2 as opb
    from api.tasks import short_name

    desired = {
        "running": opb.TASK_RUNNING,
        "shutdown": opb.TASK_SHUTDOWN,
        "accepted": opb.TASK_ACCEPTED,
    }
    wanted: dict[str, list[str]] = {}
    for key, value in filters:
        wanted.setdefault(key, []).append(value)

    def check(key: str, value: str) -> bool:
        if key == "id":
            return task.meta.id.startswith(value)
        if key == "name":
            return short_name(task).startswith(value)
        if key == "node":
            return task.node_id.startswith(value) or hostnames.get(task.node_id) == value
        if value == "shutdown":
            return task.desired_state >= opb.TASK_SHUTDOWN
        return task.desired_state == desired[value]

    return all(any(check(k, v) for v in values) for k, values in wanted.items())


@service.command("inspect")
@click.option("--pretty", is_flag=True, help="Print the information in a human friendly format.")
@click.argument("refs", metavar="SERVICE...", nargs=-1, required=True)
def inspect(pretty: bool, refs: tuple[str, ...]) -> None:
    """Display detailed information on one or more services."""
    with serviceclient.current() as client:
        found, errors = common.fetch_each(refs, client.get_service)
    if pretty:
        click.echo("\n\n".join(so.pretty_text(s) for s in found))
    else:
        click.echo(output.json_array([so.service_doc(s) for s in found]))
    sys.exit(common.show_errors(errors))


# ---- logs -------------------------------------------------------------------------


@service.command("logs")
@click.option("-f", "--follow", is_flag=True, help="Follow log output.")
@click.option(
    "-n",
    "--tail",
    default="all",
    type=FlagType("INT|all", parse.parse_tail),
    help='Number of lines to show from the end of the logs (default "all").',
)
@click.option(
    "--since", help="Show logs since timestamp (e.g. 2013-01-02T13:23:37Z) or relative (e.g. 42m)."
)
@click.option("-t", "--timestamps", is_flag=True, help="Show timestamps.")
@click.option("--raw", is_flag=True, help="Do not neatly format logs.")
@click.option("--no-task-ids", is_flag=True, help="Do not include task IDs in output.")
@click.option("--no-trunc", is_flag=True, help="Do not truncate output.")
@click.option("--no-resolve", is_flag=True, help="Do not map IDs to Names in output.")
@click.argument("ref", metavar="SERVICE|TASK")
def logs(ref: str, since: str | None, **flags: Any) -> None:
    """Fetch the logs of a service or task."""
    try:
        start = parse.parse_since(since, now=time.time()) if since else 0.0
    except ValueError as e:
        raise click.UsageError(f'invalid value for "since": {e}') from None
    sys.exit(show_logs(ref, since=start, **flags))


def show_logs(
    ref: str,
    *,
    since: float,
    follow: bool,
    tail: int,
    timestamps: bool,
    raw: bool,
    no_task_ids: bool,
    no_trunc: bool,
    no_resolve: bool,
) -> int:
    """Stream the logs of a service or a task, each line prefixed with docker's
    `web.1.abc123def456@node    | `; a node's error is a warning and the stream goes on."""
    with serviceclient.current() as client:
        try:
            svc_id = client.get_service(ref).meta.id
            tasks = {t.meta.id: t for t in client.list_tasks(services=[svc_id])}
        except NoSuchService:
            try:
                task = client.get_task(ref)
            except DaemonError:
                raise CliError(f"Error: No such task or service: {ref}") from None
            tasks = {task.meta.id: task}
        hostnames = (
            {} if no_resolve else {n.meta.id: n.description.hostname for n in client.list_nodes()}
        )
        for message in client.service_logs([ref], follow=follow, tail=tail, since=since):
            if message.error:
                click.echo(f"WARNING: {message.error}", err=True)
                continue
            if message.end or not message.data:
                continue
            if message.task_id not in tasks:
                with contextlib.suppress(DaemonError):
                    tasks[message.task_id] = client.get_task(message.task_id)
            prefix = so.log_prefix(
                message,
                tasks.get(message.task_id),
                hostnames,
                timestamps=timestamps,
                raw=raw,
                task_ids=not no_task_ids,
                trunc=not no_trunc and not no_resolve,
                resolve=not no_resolve,
            )
            common.write(message.stream, prefix.encode() + message.data)
    return 0

"""Container commands but run and create (see `run`): ps, start, stop, restart, kill,
rm, logs, exec, inspect, wait, stats and prune, with docker's flags, output and exit
codes. Commands acting on several containers go through each one, print the name given
(or the daemon's error), and exit 1 if any failed.

Each click command parses and validates its flags (the parsers in `cli.parse`), then
calls one function below it that talks to the daemon through `cli.client` and prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import click

from cli import output, parse
from cli.client import Engine, exit_codes
from cli.commands import common
from cli.parse import FlagType

if TYPE_CHECKING:
    from api import engine_pb2 as pb

PS_HEADERS = ("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES")
PS_COLUMNS = ("ID", "Image", "Command", "RunningFor", "Status", "Ports", "Names")
STATS_HEADERS = ("CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS")
STATS_COLUMNS = ("ID", "Name", "CPUPerc", "MemUsage", "MemPerc", "PIDs")
COMMAND_WIDTH = 20


time_option = click.option(
    "-t",
    "--time",
    "--timeout",
    "timeout",
    type=common.INT,
    default=-1,
    help="Seconds to wait before killing the container (default: its stop timeout).",
)

# ---- commands -------------------------------------------------------------------


@click.command()
@click.option(
    "-a", "--all", "all_", is_flag=True, help="Show all containers (default shows just running)."
)
@common.quiet_option
@click.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@common.format_option
def ps(all_: bool, quiet: bool, no_trunc: bool, fmt: str | None) -> None:
    """List containers."""
    list_containers(all_=all_, quiet=quiet, no_trunc=no_trunc, fmt=fmt)


@click.command()
@click.argument("containers", nargs=-1, required=True)
@click.pass_context
def start(ctx: click.Context, containers: tuple[str, ...]) -> None:
    """Start one or more stopped containers."""
    ctx.exit(for_each(containers, lambda engine, name: engine.container_start(name)))


@click.command()
@time_option
@click.argument("containers", nargs=-1, required=True)
@click.pass_context
def stop(ctx: click.Context, timeout: int, containers: tuple[str, ...]) -> None:
    """Stop one or more running containers."""
    ctx.exit(
        for_each(containers, lambda engine, name: engine.container_stop(name, timeout=timeout))
    )


@click.command()
@time_option
@click.argument("containers", nargs=-1, required=True)
@click.pass_context
def restart(ctx: click.Context, timeout: int, containers: tuple[str, ...]) -> None:
    """Restart one or more containers."""
    ctx.exit(
        for_each(containers, lambda engine, name: engine.container_restart(name, timeout=timeout))
    )


@click.command()
@click.option("-s", "--signal", "sig", type=common.SIGNAL, help="Signal to send (default KILL).")
@click.argument("containers", nargs=-1, required=True)
@click.pass_context
def kill(ctx: click.Context, sig: str | None, containers: tuple[str, ...]) -> None:
    """Kill one or more running containers."""
    signal = sig or ""  # the daemon's default: KILL
    ctx.exit(for_each(containers, lambda engine, name: engine.container_kill(name, signal=signal)))


@click.command()
@click.option("-f", "--force", is_flag=True, help="Force the removal of a running container.")
@click.option("-v", "--volumes", is_flag=True, help="Remove anonymous volumes of the container.")
@click.argument("containers", nargs=-1, required=True)
@click.pass_context
def rm(ctx: click.Context, force: bool, volumes: bool, containers: tuple[str, ...]) -> None:
    """Remove one or more containers."""
    ctx.exit(
        for_each(
            containers,
            lambda engine, name: engine.container_remove(name, force=force, volumes=volumes),
        )
    )


@click.command()
@click.option("-f", "--follow", is_flag=True, help="Follow log output.")
@click.option(
    "-n",
    "--tail",
    type=FlagType("N", parse.parse_tail),
    default="all",
    help='Number of lines to show from the end of the logs (default "all").',
)
@click.option("--since", help="Show logs since a timestamp (RFC 3339 or unix) or duration (10m).")
@click.option("-t", "--timestamps", is_flag=True, help="Show timestamps.")
@click.argument("container")
def logs(follow: bool, tail: int, since: str | None, timestamps: bool, container: str) -> None:
    """Fetch the logs of a container."""
    start_time = parse_since_option(since, now=time.time())
    show_logs(container, follow=follow, tail=tail, since=start_time, timestamps=timestamps)


@click.command("exec", context_settings={"allow_interspersed_args": False})
@common.env_option
@common.env_file_option
@common.workdir_option
@common.user_option
@click.argument("container")
@click.argument("command", nargs=-1, required=True)
@click.pass_context
def exec_(
    ctx: click.Context,
    env: tuple[str | None, ...],
    env_file: tuple[list[str], ...],
    workdir: str | None,
    user: str | None,
    container: str,
    command: tuple[str, ...],
) -> None:
    """Execute a command in a running container."""
    environment = common.merge_env(env_file, env)
    ctx.exit(exec_in(container, command, env=environment, workdir=workdir or "", user=user or ""))


@click.command("inspect")
@click.argument("containers", nargs=-1, required=True)
@click.pass_context
def inspect_containers(ctx: click.Context, containers: tuple[str, ...]) -> None:
    """Display detailed information on one or more containers."""
    ctx.exit(inspect(containers))


@click.command()
@click.argument("containers", nargs=-1, required=True)
@click.pass_context
def wait(ctx: click.Context, containers: tuple[str, ...]) -> None:
    """Block until one or more containers stop, then print their exit codes."""
    ctx.exit(for_each(containers, wait_one, echo=False))


@click.command()
@click.option("--no-stream", is_flag=True, help="Print one snapshot (always, for now).")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@common.format_option
@click.argument("containers", nargs=-1)
@click.pass_context
def stats(
    ctx: click.Context,
    no_stream: bool,
    no_trunc: bool,
    fmt: str | None,
    containers: tuple[str, ...],
) -> None:
    """Display a snapshot of containers' resource usage (running ones by default)."""
    ctx.exit(show_stats(containers, no_trunc=no_trunc, fmt=fmt))


@click.command()
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
def prune(force: bool) -> None:
    """Remove all stopped containers."""
    if force or common.confirm("WARNING! This will remove all stopped containers."):
        prune_containers()


# ---- validation -----------------------------------------------------------------


def parse_since_option(since: str | None, *, now: float) -> float:
    if not since:
        return 0.0
    try:
        return parse.parse_since(since, now=now)
    except ValueError as e:
        raise click.UsageError(f'invalid value for "since": {e}') from None


# ---- actions --------------------------------------------------------------------


def for_each(
    names: Sequence[str], action: Callable[[Engine, str], object], *, echo: bool = True
) -> int:
    """Apply `action` to every container, docker-style (see common.each)."""
    with common.engine() as engine:
        return common.each(names, lambda name: action(engine, name), echo=echo)


def wait_one(engine: Engine, name: str) -> None:
    click.echo(engine.container_wait(name).exit_code)


def list_containers(*, all_: bool, quiet: bool, no_trunc: bool, fmt: str | None) -> None:
    with common.engine() as engine:
        containers = sorted(engine.container_list(all=all_), key=lambda c: -c.created)
    if quiet:
        for c in containers:
            click.echo(c.id if no_trunc else output.short_id(c.id))
        return
    now = time.time()
    rows = [container_row(c, now=now, trunc=not no_trunc) for c in containers]
    cells = [[row[col] for col in PS_COLUMNS] for row in rows]
    common.print_rows(fmt, PS_HEADERS, rows, cells)


def container_row(c: pb.ContainerSummary, *, now: float, trunc: bool) -> dict[str, str]:
    """A `ps` row with docker's field names (its `--format json` object)."""
    command = output.ellipsis(c.command, COMMAND_WIDTH) if trunc else c.command
    return {
        "ID": output.short_id(c.id) if trunc else c.id,
        "Names": c.name.lstrip("/"),
        "Image": c.image,
        "Command": output.go_quote(command),
        "CreatedAt": output.created_at(c.created),
        "RunningFor": output.ago(c.created, now=now),
        "Status": c.status,
        "State": c.state,
        "Ports": c.ports,
        "Labels": output.labels_text(c.labels),
    }


def show_logs(cid: str, *, follow: bool, tail: int, since: float, timestamps: bool) -> None:
    with common.engine() as engine:
        for entry in engine.container_logs(cid, follow=follow, tail=tail, since=since):
            prefix = f"{output.rfc3339_nano(entry.time)} ".encode() if timestamps else b""
            common.write(entry.stream, prefix + entry.data)


def exec_in(
    cid: str, command: Sequence[str], *, env: Sequence[str], workdir: str, user: str
) -> int:
    """Stream the command's output; its exit code comes in the final message."""
    exit_code = 0
    with exit_codes(1), common.engine() as engine:
        for out in engine.container_exec(cid, command, env=env, workdir=workdir, user=user):
            if out.stream == "exit":
                exit_code = out.exit_code
            else:
                common.write(out.stream, out.data)
    return exit_code


def inspect(names: Sequence[str]) -> int:
    import json

    docs: list[Any] = []
    with common.engine() as engine:
        failed = common.each(
            names, lambda name: docs.append(json.loads(engine.container_inspect(name))), echo=False
        )
    click.echo(output.json_array(docs))
    return failed


def show_stats(names: Sequence[str], *, no_trunc: bool, fmt: str | None) -> int:
    snapshots: list[pb.Stats] = []
    with common.engine() as engine:
        targets = names or [c.id for c in engine.container_list(all=False)]
        failed = common.each(
            targets, lambda name: snapshots.append(engine.container_stats(name)), echo=False
        )
    rows = [stats_row(s, trunc=not no_trunc) for s in snapshots]
    cells = [[row[col] for col in STATS_COLUMNS] for row in rows]
    common.print_rows(fmt, STATS_HEADERS, rows, cells)
    return failed


def stats_row(s: pb.Stats, *, trunc: bool) -> dict[str, str]:
    """A `stats` row with docker's field names."""
    percent = 100.0 * s.memory_usage / s.memory_limit if s.memory_limit else 0.0
    return {
        "ID": output.short_id(s.id) if trunc else s.id,
        "Container": output.short_id(s.id) if trunc else s.id,
        "Name": s.name.lstrip("/"),
        "CPUPerc": f"{s.cpu_percent:.2f}%",
        "MemUsage": f"{output.bytes_size(s.memory_usage)} / {output.bytes_size(s.memory_limit)}",
        "MemPerc": f"{percent:.2f}%",
        "PIDs": str(s.pids),
    }


def prune_containers() -> None:
    with common.engine() as engine:
        pruned = engine.container_prune()
    common.print_prune("Containers", pruned.deleted, pruned.space_reclaimed)

"""run and create: a container from docker's flags, then (run) its life attached.

`run` is create, start, the followed logs (stdout entries to stdout, stderr entries to
stderr, flushed per entry), then wait, exiting with the container's code. With `-d` it
prints the ID once started. Failures exit 125, or the code the daemon hints in the
`pyswarm-exit-code` trailing metadata (126 not executable, 127 not found); flag errors
exit 125 too (`common.RunLikeCommand`). Kept apart from the other container commands
so that `pyswarm run` imports as little as possible.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import click

from cli import parse
from cli.client import CliError, ContainerSpec, DaemonError, Engine, exit_codes
from cli.commands import common
from cli.parse import FlagType

RUN_FAILED = 125
REMOTE_PULLS_OFF = "remote pulls of unqualified names are turned off"  # agent.registry

CONTAINER_OPTIONS = (
    click.option("--name", default="", help="Assign a name to the container."),
    common.env_option,
    common.env_file_option,
    common.workdir_option,
    common.user_option,
    click.option("-h", "--hostname", default="", help="Container host name."),
    click.option("--entrypoint", help="Overwrite the default ENTRYPOINT of the image."),
    click.option(
        "-v",
        "--volume",
        multiple=True,
        type=FlagType("SRC:DST[:ro]", parse.parse_volume),
        help="Bind mount a host path (SRC starts with /) or mount a named volume.",
    ),
    click.option(
        "--mount",
        multiple=True,
        type=FlagType("MOUNT", parse.parse_mount),
        help="Attach a mount: type=bind|volume|tmpfs,source=,target=[,readonly].",
    ),
    click.option(
        "--tmpfs",
        multiple=True,
        type=FlagType("PATH[:OPTS]", parse.parse_tmpfs),
        help="Mount a tmpfs directory (/path[:size=64m,mode=1777]).",
    ),
    click.option(
        "--read-only", is_flag=True, help="Mount the container's root filesystem read only."
    ),
    click.option(
        "-m",
        "--memory",
        type=FlagType("BYTES", parse.parse_memory),
        default=0,
        help="Memory limit (e.g. 512m, 1g).",
    ),
    click.option(
        "--cpus", type=FlagType("DECIMAL", parse.parse_cpus), default=0, help="Number of CPUs."
    ),
    click.option(
        "--pids-limit",
        type=FlagType("INT", parse.parse_pids_limit),
        default=0,
        help="Tune container pids limit (-1 for unlimited).",
    ),
    click.option("--cap-add", multiple=True, metavar="CAP", help="Add Linux capabilities."),
    click.option("--cap-drop", multiple=True, metavar="CAP", help="Drop Linux capabilities."),
    click.option(
        "--restart",
        type=FlagType("POLICY", parse.parse_restart),
        default="no",
        help="Restart policy: no, on-failure[:max-retries], always, unless-stopped.",
    ),
    click.option("--stop-signal", type=common.SIGNAL, help="Signal to stop the container."),
    click.option(
        "--stop-timeout",
        type=common.INT,
        default=-1,
        help="Timeout (in seconds) to stop a container.",
    ),
    click.option(
        "--network",
        default="bridge",
        metavar="NETWORK",
        help="Connect the container to a network: bridge (default), host, none, or an "
        "attachable overlay network of the swarm.",
    ),
    click.option(
        "-p",
        "--publish",
        multiple=True,
        type=FlagType("[IP:]HOST:CTR[/udp]", parse.parse_publish),
        help="Publish a container's port to the host.",
    ),
    click.option(
        "-l",
        "--label",
        multiple=True,
        type=FlagType("K=V", parse.parse_label),
        help="Set metadata on a container.",
    ),
    click.option("--rm", is_flag=True, help="Automatically remove the container when it exits."),
    click.argument("image"),
    click.argument("command", nargs=-1),
)


def container_options(func: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(CONTAINER_OPTIONS):
        func = option(func)
    return func


@click.command(cls=common.RunLikeCommand)
@click.option("-d", "--detach", is_flag=True, help="Run container in background and print its ID.")
@container_options
@click.pass_context
def run(
    ctx: click.Context, /, detach: bool, image: str, command: tuple[str, ...], **flags: Any
) -> None:
    """Create and run a new container from an image."""
    spec = container_spec(image, command, flags)
    ctx.exit(run_container(spec, detach=detach))


@click.command(cls=common.RunLikeCommand)
@container_options
def create(image: str, command: tuple[str, ...], **flags: Any) -> None:
    """Create a new container (print its ID)."""
    create_only(container_spec(image, command, flags))


# ---- validation -----------------------------------------------------------------


def container_spec(image: str, command: tuple[str, ...], flags: Mapping[str, Any]) -> ContainerSpec:
    """The ContainerSpec of `run`/`create` flags, as click parsed them."""
    if flags["rm"] and flags["restart"].name != "no":
        raise click.UsageError("Conflicting options: --restart and --rm")
    return ContainerSpec(
        image=image,
        cmd=command,
        name=flags["name"],
        entrypoint=flags["entrypoint"],
        env=common.merge_env(flags["env_file"], flags["env"]),
        workdir=flags["workdir"] or "",
        user=flags["user"] or "",
        hostname=flags["hostname"],
        mounts=(*flags["volume"], *flags["mount"], *flags["tmpfs"]),
        read_only=flags["read_only"],
        memory_bytes=flags["memory"],
        nano_cpus=flags["cpus"],
        pids_limit=flags["pids_limit"],
        cap_add=flags["cap_add"],
        cap_drop=flags["cap_drop"],
        restart=flags["restart"],
        stop_signal=flags["stop_signal"] or "",
        stop_timeout=flags["stop_timeout"],
        network=flags["network"],
        ports=flags["publish"],
        labels=flags["label"],
        auto_remove=flags["rm"],
    )


# ---- actions --------------------------------------------------------------------


def run_container(spec: ContainerSpec, *, detach: bool) -> int:
    """Create and start; with `detach` print the ID, else stream the logs and wait."""
    with exit_codes(RUN_FAILED), common.engine() as engine:
        cid = create_container(engine, spec)
        engine.container_start(cid)
        if detach:
            click.echo(cid)
            return 0
        for entry in engine.container_logs(cid, follow=True, tail=-1, since=0.0):
            common.write(entry.stream, entry.data)
        result = engine.container_wait(cid)
    if result.error:
        raise CliError(f"Error waiting for container: {result.error}", exit_code=RUN_FAILED)
    return result.exit_code


def create_only(spec: ContainerSpec) -> None:
    with exit_codes(RUN_FAILED), common.engine() as engine:
        click.echo(create_container(engine, spec))


def create_container(engine: Engine, spec: ContainerSpec) -> str:
    """Create; if the image is missing, pull it (progress on stderr) and create again."""
    try:
        created = engine.container_create(spec)
    except DaemonError as e:
        if e.status != "NOT_FOUND" or not e.details.startswith("No such image"):
            raise
        pull_missing(engine, spec.image, missing=e)
        created = engine.container_create(spec)
    for warning in created.warnings:
        click.echo(f"WARNING: {warning}", err=True)
    return created.id


def pull_missing(engine: Engine, image: str, *, missing: DaemonError) -> None:
    """docker run's on-demand pull (imported only then: start-up time). When the
    daemon pulls no unqualified names (`--default-registry ""`), the image is simply
    missing: `missing` is raised, as if no pull had been tried."""
    from cli.commands import distribution

    notice = f"Unable to find image '{distribution.full_reference(image)}' locally"
    messages = iter(engine.image_pull(image, auth=distribution.stored_auth(image)))
    try:
        first = next(messages, None)
    except DaemonError as e:
        if e.status == "NOT_FOUND" and REMOTE_PULLS_OFF in e.details:
            raise missing from None
        click.echo(notice, err=True)
        raise
    click.echo(notice, err=True)
    rest = itertools.chain([] if first is None else [first], messages)
    distribution.show_progress(rest, quiet=False, err=True)

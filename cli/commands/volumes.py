"""Volume commands: volume create, ls, inspect, rm and prune, with docker's output.

The daemon answers with `Volume` messages; `inspect` renders them as docker's JSON
(CreatedAt, Driver, Labels, Mountpoint, Name, Options, Scope).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from cli import output, parse
from cli.commands import common
from cli.parse import FlagType

if TYPE_CHECKING:
    from api import engine_pb2 as pb

VOLUME_HEADERS = ("DRIVER", "VOLUME NAME")
VOLUME_COLUMNS = ("Driver", "Name")
LOCAL = "local"


@click.command()
@click.option(
    "-d", "--driver", type=click.Choice([LOCAL]), default=LOCAL, help="Specify volume driver name."
)
@click.option(
    "-l",
    "--label",
    multiple=True,
    type=FlagType("K=V", parse.parse_label),
    help="Set metadata for a volume.",
)
@click.argument("name", required=False, default="")
def create(driver: str, label: tuple[tuple[str, str], ...], name: str) -> None:
    """Create a volume (named NAME, or a generated name)."""
    create_volume(name, labels=dict(label))


@click.command()
@common.quiet_option
@common.format_option
def ls(quiet: bool, fmt: str | None) -> None:
    """List volumes."""
    list_volumes(quiet=quiet, fmt=fmt)


@click.command()
@click.argument("names", metavar="VOLUME...", nargs=-1, required=True)
@click.pass_context
def inspect(ctx: click.Context, names: tuple[str, ...]) -> None:
    """Display detailed information on one or more volumes."""
    ctx.exit(inspect_volumes(names))


@click.command()
@click.option("-f", "--force", is_flag=True, help="Force the removal of one or more volumes.")
@click.argument("names", metavar="VOLUME...", nargs=-1, required=True)
@click.pass_context
def rm(ctx: click.Context, force: bool, names: tuple[str, ...]) -> None:
    """Remove one or more volumes."""
    ctx.exit(remove_volumes(names, force=force))


@click.command()
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
def prune(force: bool) -> None:
    """Remove unused local volumes."""
    warning = (
        "WARNING! This will remove anonymous local volumes not used by at least one container."
    )
    if force or common.confirm(warning):
        prune_volumes()


# ---- actions --------------------------------------------------------------------


def create_volume(name: str, *, labels: dict[str, str]) -> None:
    with common.engine() as engine:
        click.echo(engine.volume_create(name, labels=labels).name)


def list_volumes(*, quiet: bool, fmt: str | None) -> None:
    with common.engine() as engine:
        volumes = sorted(engine.volume_list(), key=lambda v: v.name)
    if quiet:
        for volume in volumes:
            click.echo(volume.name)
        return
    rows = [volume_row(v) for v in volumes]
    cells = [[row[col] for col in VOLUME_COLUMNS] for row in rows]
    common.print_rows(fmt, VOLUME_HEADERS, rows, cells)


def volume_row(volume: pb.Volume) -> dict[str, str]:
    """A `volume ls` row with docker's field names."""
    return {
        "Driver": volume.driver or LOCAL,
        "Name": volume.name,
        "Mountpoint": volume.mountpoint,
        "Labels": output.labels_text(volume.labels),
        "Scope": LOCAL,
        "Links": "N/A",
        "Size": "N/A",
    }


def volume_doc(volume: pb.Volume) -> dict[str, Any]:
    """docker's `volume inspect` document."""
    return {
        "CreatedAt": output.rfc3339(volume.created),
        "Driver": volume.driver or LOCAL,
        "Labels": dict(volume.labels) or None,
        "Mountpoint": volume.mountpoint,
        "Name": volume.name,
        "Options": None,
        "Scope": LOCAL,
    }


def inspect_volumes(names: Sequence[str]) -> int:
    docs: list[dict[str, Any]] = []
    with common.engine() as engine:
        failed = common.each(
            names, lambda name: docs.append(volume_doc(engine.volume_inspect(name))), echo=False
        )
    click.echo(output.json_array(docs))
    return failed


def remove_volumes(names: Sequence[str], *, force: bool) -> int:
    with common.engine() as engine:
        return common.each(names, lambda name: engine.volume_remove(name, force=force))


def prune_volumes() -> None:
    with common.engine() as engine:
        pruned = engine.volume_prune()
    common.print_prune("Volumes", pruned.deleted, pruned.space_reclaimed)

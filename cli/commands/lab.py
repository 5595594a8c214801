"""`pyswarm lab up|ls|exec|down`: a swarm of pyswarm hosts on this machine.

Each command parses its flags and calls one function of `deploy.lab` (imported inside
the command: it pulls in pyroute2, which `--help` should not pay for); a `LabError`
becomes one line on stderr and exit 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from cli import output
from cli.main import CommandFailure

if TYPE_CHECKING:
    from deploy.lab import Lab

HEADERS = ["NAME", "ROLE", "ADDRESS", "NETNS", "PID", "HOST"]
KEYS = [header.lower() for header in HEADERS]

name_option = click.option(
    "--name", default="lab", show_default=True, help="Name of the lab ([a-z0-9-])."
)


@contextmanager
def _lab_errors() -> Iterator[None]:
    from deploy.lab import LabError

    try:
        yield
    except LabError as exc:
        raise CommandFailure(f"pyswarm lab: {exc}") from None


@click.group()
def lab() -> None:
    """Run a lab: several pyswarm hosts on this machine, one network namespace each."""


@lab.command()
@click.option("--managers", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True)
@name_option
@click.option(
    "--heartbeat", default="1s", show_default=True, help="Dispatcher heartbeat of the swarm."
)
@click.option("--no-swarm", is_flag=True, help="Start the daemons but form no swarm.")
def up(managers: int, workers: int, name: str, heartbeat: str, no_swarm: bool) -> None:
    """Create the lab's hosts, start a daemon on each, and form a swarm."""
    from deploy import lab as lablib

    with _lab_errors():
        made = lablib.up(
            name, managers=managers, workers=workers, heartbeat=heartbeat, swarm=not no_swarm
        )
    _print(made, None)


@lab.command()
@name_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    help="table (default), or json: one object per line.",
)
def ls(name: str, fmt: str | None) -> None:
    """List the lab's hosts."""
    from deploy import lab as lablib

    with _lab_errors():
        found = lablib.load(name)
    _print(found, fmt)


@lab.command(
    "exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@name_option
@click.argument("node")
@click.argument("command", metavar="-- CMD...", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(name: str, node: str, command: tuple[str, ...]) -> None:
    """Run CMD in the network namespace of host NODE, with PYSWARM_HOST set to its daemon."""
    from deploy import lab as lablib

    with _lab_errors():
        lablib.exec_in(name, node, list(command))


@lab.command()
@name_option
def down(name: str) -> None:
    """Remove everything the lab made: daemons, containers, namespaces, data."""
    from deploy import lab as lablib

    with _lab_errors():
        lablib.down(name)


def _print(found: Lab, fmt: str | None) -> None:
    rows = [host.row() for host in found.hosts]
    cells = [["-" if row[key] is None else str(row[key]) for key in KEYS] for row in rows]
    for line in output.format_rows(fmt, HEADERS, rows, cells):
        click.echo(line)

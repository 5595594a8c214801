"""pull, push, login and logout: the daemon moves images; the client shows progress and
keeps the credentials (`cli.credentials`), sending them with each pull and push.

Progress arrives as docker's JSON messages (`Progress`). On a terminal each layer gets
a progress bar (rich, imported only then: start-up time); piped, the output is docker's
non-terminal form: one line per status change (`<id>: Pull complete`), the byte counts
of Downloading/Pushing left out, then the `Digest:` and `Status:` lines.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

import click

from cli import credentials
from cli.client import CliError, RegistryLogin
from cli.commands import common
from cli.output import human_size

if TYPE_CHECKING:
    from api import engine_pb2 as pb

TRANSFER_STATUSES = frozenset({"Downloading", "Pushing", "Extracting"})
DONE_STATUSES = frozenset(
    {"Download complete", "Pull complete", "Already exists", "Pushed", "Layer already exists"}
)


@click.command()
@click.option("-q", "--quiet", is_flag=True, help="Suppress verbose output.")
@click.argument("name", metavar="NAME[:TAG|@DIGEST]")
def pull(quiet: bool, name: str) -> None:
    """Download an image from a registry."""
    pull_image(name, quiet=quiet)
    if quiet:
        click.echo(full_reference(name))


@click.command()
@click.option("-q", "--quiet", is_flag=True, help="Suppress verbose output.")
@click.argument("name", metavar="NAME[:TAG]")
def push(quiet: bool, name: str) -> None:
    """Upload an image to a registry."""
    with common.engine() as engine:
        show_progress(engine.image_push(name, auth=stored_auth(name)), quiet=quiet)


@click.command()
@click.option("-u", "--username", help="Username.")
@click.option("-p", "--password", help="Password.")
@click.option("--password-stdin", is_flag=True, help="Take the password from stdin.")
@click.argument("server", required=False)
def login(
    username: str | None, password: str | None, password_stdin: bool, server: str | None
) -> None:
    """Log in to a registry (the Docker Hub if no SERVER is given)."""
    if password is not None and password_stdin:
        raise click.UsageError("--password and --password-stdin are mutually exclusive")
    if password_stdin:
        if not username:
            raise click.UsageError("Must provide --username with --password-stdin")
        password = sys.stdin.read().rstrip("\r\n")
    elif password is not None:
        click.echo(
            "WARNING! Using --password via the CLI is insecure. Use --password-stdin.", err=True
        )
    username = username or click.prompt("Username", err=True)
    if password is None:
        password = click.prompt("Password", hide_input=True, err=True)
    log_in(credentials.registry_key(server or ""), username, password or "")


@click.command()
@click.argument("server", required=False)
def logout(server: str | None) -> None:
    """Log out from a registry (the Docker Hub if no SERVER is given)."""
    key = credentials.registry_key(server or "")
    if credentials.erase(key):
        click.echo(f"Removing login credentials for {key}")
    else:
        click.echo(f"Not logged in to {key}")


# ---- actions --------------------------------------------------------------------


def log_in(server: str, username: str, password: str) -> None:
    if not username:
        raise CliError("Error: Username Required")
    if not password:
        raise CliError("Error: Password Required")
    with common.engine() as engine:
        response = engine.login(RegistryLogin(server, username, password))
    credentials.store(server, username, password)
    click.echo(response.status or "Login Succeeded")


def pull_image(name: str, *, quiet: bool) -> None:
    with common.engine() as engine:
        show_progress(engine.image_pull(name, auth=stored_auth(name)), quiet=quiet)


def stored_auth(image: str) -> RegistryLogin | None:
    registry = credentials.registry_of(image)
    found = credentials.get(registry)
    return None if found is None else RegistryLogin(registry, *found)


def full_reference(name: str) -> str:
    """`busybox` → `busybox:latest`; names with a tag or digest stay as they are."""
    last = name.rsplit("/", 1)[-1]
    return name if "@" in name or ":" in last else f"{name}:latest"


def show_progress(messages: Iterable[pb.Progress], *, quiet: bool, err: bool = False) -> None:
    """Print the messages (or only check them, with `quiet`); CliError on an error."""
    out = sys.stderr if err else sys.stdout
    if quiet:
        for message in messages:
            _check(message)
    elif out.isatty():
        _show_bars(messages, out)
    else:
        for line in progress_lines(messages):
            click.echo(line, file=out)


def progress_lines(messages: Iterable[pb.Progress]) -> Iterator[str]:
    """docker's non-terminal progress: status changes only, no byte counts."""
    for message in messages:
        _check(message)
        if message.status in TRANSFER_STATUSES and message.current:
            continue
        yield _line(message)


def _line(message: pb.Progress) -> str:
    return f"{message.id}: {message.status}" if message.id else message.status


def _check(message: pb.Progress) -> None:
    if message.error:
        raise CliError(f"Error response from daemon: {message.error}")


def _show_bars(messages: Iterable[pb.Progress], out: IO[str]) -> None:
    """A bar per layer; whole-operation lines above the bars until the first layer
    shows, then below them at the end (where docker prints Digest: and Status:)."""
    after: list[str] = []
    with _bars(out) as progress:
        tasks: dict[str, Any] = {}
        for message in messages:
            _check(message)
            if not message.id or message.status.startswith("Pulling from "):
                if tasks:
                    after.append(_line(message))
                else:
                    progress.console.print(_line(message), highlight=False)
                continue
            if message.id not in tasks:
                tasks[message.id] = progress.add_task(message.status, layer=message.id, size="")
            progress.update(tasks[message.id], **_bar_fields(message))
    for line in after:
        click.echo(line, file=out)


def _bar_fields(message: pb.Progress) -> dict[str, Any]:
    fields: dict[str, Any] = {"description": message.status}
    if message.current and message.total:
        fields.update(completed=message.current, total=message.total)
        fields["size"] = f"{human_size(message.current)}/{human_size(message.total)}"
    elif message.status in DONE_STATUSES:
        fields.update(completed=1, total=1, size="")
    return fields


@contextmanager
def _bars(out: IO[str]) -> Iterator[Any]:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn

    progress = Progress(
        TextColumn("{task.fields[layer]}: {task.description:<20}"),
        BarColumn(),
        TextColumn("{task.fields[size]}"),
        console=Console(file=out),
    )
    with progress:
        yield progress

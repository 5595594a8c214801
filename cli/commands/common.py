"""What the command modules share: the daemon address, docker's per-object loop and
prune prompt and output, binary stream output, the `--format`/`-q` options of list
commands, and the options of run, create and exec (`-e`, `--env-file`, `-w`, `-u`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import click

from cli import output, parse
from cli.client import DaemonError, Engine, connect
from cli.main import current_host
from cli.parse import FlagType

T = TypeVar("T")


class RunLikeCommand(click.Command):
    """A command whose flag errors exit 125, as docker run's and create's do; option
    parsing stops at the first argument, so `run busybox ls -l` passes `-l` on."""

    usage_exit_code = 125

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("context_settings", {}).update(
            ignore_unknown_options=False, allow_interspersed_args=False
        )
        super().__init__(*args, **kwargs)


class ObjectGroup(click.Group):
    """A management group (`service`, `node`, `network`, `secret`, ...) whose `list` and
    `remove` are hidden aliases of `ls` and `rm`, as docker's."""

    aliases: ClassVar[dict[str, str]] = {"list": "ls", "remove": "rm"}

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, self.aliases.get(cmd_name, cmd_name))


def engine() -> Engine:
    """A connection to the daemon chosen by `-H`/`$PYSWARM_HOST`."""
    return connect(current_host())


def each(names: Iterable[str], action: Callable[[str], object], *, echo: bool = True) -> int:
    """Run `action` on every name, as docker's multi-object commands: print the name on
    success (when `echo`) or the daemon's error, go on, and return 1 if any failed."""
    failed = 0
    for name in names:
        try:
            action(name)
        except DaemonError as e:
            e.show()
            failed = 1
            continue
        if echo:
            click.echo(name)
    return failed


def fetch_each(refs: Iterable[str], get: Callable[[str], T]) -> tuple[list[T], list[str]]:
    """docker's multi-object reads (inspect, ps): what each ref names, in order, and the
    one-line errors of those that failed; the command goes on with the others."""
    found: list[T] = []
    errors: list[str] = []
    for ref in refs:
        try:
            found.append(get(ref))
        except DaemonError as e:
            errors.append(e.message)
    return found, errors


def show_errors(errors: Sequence[str]) -> int:
    """Print `fetch_each`'s errors (after the output); the exit code: 1 if any."""
    for message in errors:
        click.echo(message, err=True)
    return 1 if errors else 0


def confirm(warning: str) -> bool:
    """docker's prune prompt; anything but y/yes (or end of input) means no."""
    click.echo(f"{warning}\nAre you sure you want to continue? [y/N] ", nl=False)
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def write(stream: str, data: bytes) -> None:
    """Write container output to our stdout or stderr as it comes, unbuffered."""
    out = sys.stderr.buffer if stream == "stderr" else sys.stdout.buffer
    out.write(data)
    out.flush()


def print_rows(
    fmt: str | None,
    headers: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    cells: Sequence[Sequence[str]],
) -> None:
    try:
        lines = output.format_rows(fmt, headers, rows, cells)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    for line in lines:
        click.echo(line)


def print_prune(kind: str, deleted: Iterable[str], space: int) -> None:
    """`Deleted Containers:` and its list (if any), then `Total reclaimed space: 1.2MB`."""
    deleted = list(deleted)
    if deleted:
        click.echo(f"Deleted {kind}:")
        for item in deleted:
            click.echo(item)
        click.echo()
    click.echo(f"Total reclaimed space: {output.human_size(space)}")


format_option = click.option(
    "--format",
    "fmt",
    type=FlagType("FORMAT", output.check_format),
    help="Output format: table (default), json (one object per line) or a Go-style "
    "template such as '{{.ID}}'.",
)
quiet_option = click.option("-q", "--quiet", is_flag=True, help="Only display IDs.")


# ---- options shared by run, create and exec ----


def _env(value: str) -> str | None:
    return parse.parse_env(value, os.environ)


def _env_file(value: str) -> list[str]:
    return parse.read_env_file(value, os.environ)


ENV = FlagType("ENV", _env)
ENV_FILE = FlagType("FILE", _env_file)
SIGNAL = FlagType("SIGNAL", parse.parse_signal)
INT = FlagType("INT", parse.parse_int)

env_option = click.option(
    "-e", "--env", multiple=True, type=ENV, help="Set environment variables (K=V, or K)."
)
env_file_option = click.option(
    "--env-file", multiple=True, type=ENV_FILE, help="Read in a file of environment variables."
)
workdir_option = click.option("-w", "--workdir", help="Working directory inside the container.")
user_option = click.option(
    "-u", "--user", help="Username or UID (format: <name|uid>[:<group|gid>])."
)


def merge_env(files: Sequence[list[str]], entries: Sequence[str | None]) -> tuple[str, ...]:
    """--env-file entries first, then -e ones (a later one wins, as docker's)."""
    merged = [entry for file in files for entry in file]
    merged += [entry for entry in entries if entry is not None]
    return tuple(merged)

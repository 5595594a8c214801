"""`pyswarm secret`: create, ls, inspect and rm, with docker's flags, columns and words.

Secrets and configs share their shape (`SecretSpec`) and their commands: `group(KIND)`
builds either group; `cli.commands.config` is the config one. A secret's data never
comes back from the managers; a config's does (inspect shows it base64, as docker).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import click

from cli import output, parse, serviceclient
from cli.client import CliError
from cli.commands import common
from cli.commands.node import go_json_time, go_time_string
from cli.parse import FlagType
from cli.serviceclient import ServiceClient

if TYPE_CHECKING:
    from api import objects_pb2 as opb

LS_HEADERS = ("ID", "NAME", "CREATED", "UPDATED")
LABEL = FlagType("K=V", parse.parse_label)


class Kind(NamedTuple):
    name: str  # "secret" | "config"
    max_size: int  # bytes; swarmkit's limits
    shows_data: bool


SECRET = Kind("secret", 500 * 1024, shows_data=False)
CONFIG = Kind("config", 1000 * 1024, shows_data=True)


def read_data(path: str, kind: Kind) -> bytes:
    """The file's bytes (`-`: standard input), refused above the kind's limit."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read(kind.max_size + 1)
        else:
            with open(path, "rb") as file:
                data = file.read(kind.max_size + 1)
    except OSError as e:
        raise CliError(f'Error reading content from "{path}": {e.strerror or e}') from None
    if len(data) > kind.max_size:
        size = len(data) if path == "-" else _file_size(path)
        raise CliError(f"{kind.name} too large: {size} bytes (max {kind.max_size // 1024} KB)")
    return data


def _file_size(path: str) -> int:
    import os

    return os.path.getsize(path)


def row(obj: opb.Secret | opb.Config, *, now: float) -> dict[str, Any]:
    """An `ls` row with docker's field names."""
    return {
        "ID": obj.meta.id,
        "Name": obj.spec.name,
        "CreatedAt": output.ago(obj.meta.created_at, now=now),
        "UpdatedAt": output.ago(obj.meta.updated_at or obj.meta.created_at, now=now),
        "Labels": output.labels_text(obj.spec.labels),
    }


def doc(obj: opb.Secret | opb.Config, kind: Kind) -> dict[str, Any]:
    """docker's inspect document (configs carry Data, base64)."""
    import base64

    spec: dict[str, Any] = {"Name": obj.spec.name, "Labels": dict(obj.spec.labels)}
    if kind.shows_data:
        spec["Data"] = base64.b64encode(obj.spec.data).decode()
    return {
        "ID": obj.meta.id,
        "Version": {"Index": obj.meta.version},
        "CreatedAt": go_json_time(obj.meta.created_at),
        "UpdatedAt": go_json_time(obj.meta.updated_at or obj.meta.created_at),
        "Spec": spec,
    }


def pretty_text(obj: opb.Secret | opb.Config, kind: Kind) -> str:
    """docker's `inspect --pretty`."""
    lines = [f"ID:              {obj.meta.id}", f"Name:              {obj.spec.name}"]
    if obj.spec.labels:
        lines += ["Labels:", *(f" - {k}={v}" for k, v in sorted(obj.spec.labels.items()))]
    if not kind.shows_data:
        lines.append("Driver:")
    lines += [
        f"Created at:            {go_time_string(obj.meta.created_at)}",
        f"Updated at:            {go_time_string(obj.meta.updated_at or obj.meta.created_at)}",
    ]
    if kind.shows_data:
        lines += ["Data:", obj.spec.data.decode(errors="replace")]
    return "\n".join(lines)


# ---- client calls per kind ----


def _create(
    client: ServiceClient, kind: Kind, name: str, data: bytes, labels: dict[str, str]
) -> str:
    if kind is SECRET:
        return client.create_secret(name, data, labels=labels).meta.id
    return client.create_config(name, data, labels=labels).meta.id


def _list(client: ServiceClient, kind: Kind) -> Sequence[opb.Secret | opb.Config]:
    return client.list_secrets() if kind is SECRET else client.list_configs()


def _get(client: ServiceClient, kind: Kind, ref: str) -> opb.Secret | opb.Config:
    return client.get_secret(ref) if kind is SECRET else client.get_config(ref)


def _remove(client: ServiceClient, kind: Kind, ref: str) -> None:
    (client.remove_secret if kind is SECRET else client.remove_config)(ref)


# ---- the commands ----


def group(kind: Kind) -> click.Group:
    """The `secret` or `config` group."""
    word = kind.name
    plural = f"{word}s"

    @click.group(word, cls=common.ObjectGroup, help=f"Manage Swarm {plural}.")
    def commands() -> None:
        pass

    @commands.command("create", help=f"Create a {word} from a file or STDIN as content.")
    @click.option("-l", "--label", multiple=True, type=LABEL, help=f"{word.title()} labels.")
    @click.argument("name", metavar=word.upper())
    @click.argument("path", metavar="FILE|-")
    def create(label: tuple[tuple[str, str], ...], name: str, path: str) -> None:
        data = read_data(path, kind)
        with serviceclient.current() as client:
            click.echo(_create(client, kind, name, data, dict(label)))

    @commands.command("ls", help=f"List {plural}.")
    @common.quiet_option
    @common.format_option
    def ls(quiet: bool, fmt: str | None) -> None:
        with serviceclient.current() as client:
            objects = sorted(_list(client, kind), key=lambda o: (o.spec.name, o.meta.id))
        if quiet:
            for obj in objects:
                click.echo(obj.meta.id)
            return
        rows = [row(o, now=time.time()) for o in objects]
        cells = [[r["ID"], r["Name"], r["CreatedAt"], r["UpdatedAt"]] for r in rows]
        common.print_rows(fmt, LS_HEADERS, rows, cells)

    @commands.command("inspect", help=f"Display detailed information on one or more {plural}.")
    @click.option(
        "--pretty", is_flag=True, help="Print the information in a human friendly format."
    )
    @click.argument("refs", metavar=f"{word.upper()}...", nargs=-1, required=True)
    def inspect(pretty: bool, refs: tuple[str, ...]) -> None:
        with serviceclient.current() as client:
            found, errors = common.fetch_each(refs, lambda ref: _get(client, kind, ref))
        if pretty:
            click.echo("\n\n".join(pretty_text(o, kind) for o in found))
        else:
            click.echo(output.json_array([doc(o, kind) for o in found]))
        sys.exit(common.show_errors(errors))

    @commands.command("rm", help=f"Remove one or more {plural}.")
    @click.argument("refs", metavar=f"{word.upper()}...", nargs=-1, required=True)
    def rm(refs: tuple[str, ...]) -> None:
        with serviceclient.current() as client:
            sys.exit(common.each(refs, lambda ref: _remove(client, kind, ref)))

    return commands


secret = group(SECRET)

"""System commands: version, info, and the generic `inspect` of any object.

`version` and `info` print the client's part first, so they say something useful even
when the daemon is down (then the connection error follows on stderr, exit 1).
`info` renders the daemon's SystemInfo JSON with docker's labels for docker's keys
(Containers, ContainersRunning, ..., Driver, CgroupVersion, DefaultRuntime,
DockerRootDir, ...), then any other keys as they come.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import click

from cli import output
from cli.client import DaemonError, Engine
from cli.commands import common
from cli.commands.volumes import volume_doc

if TYPE_CHECKING:
    from api import engine_pb2 as pb

LABEL_WIDTH = 20
GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}
OBJECT_KINDS = ("container", "image", "volume")
NOT_FOUND = "NOT_FOUND"

# (label, the JSON keys it may come under (docker's first), indent)
INFO_FIELDS: tuple[tuple[str, tuple[str, ...], int], ...] = (
    ("Containers", ("Containers",), 1),
    ("Running", ("ContainersRunning",), 2),
    ("Paused", ("ContainersPaused",), 2),
    ("Stopped", ("ContainersStopped",), 2),
    ("Images", ("Images",), 1),
    ("Server Version", ("ServerVersion",), 1),
    ("Storage Driver", ("Driver", "StorageDriver"), 1),
    ("Logging Driver", ("LoggingDriver",), 1),
    ("Cgroup Driver", ("CgroupDriver",), 1),
    ("Cgroup Version", ("CgroupVersion",), 1),
    ("Runtimes", ("Runtimes",), 1),
    ("Runtime", ("DefaultRuntime", "Runtime"), 1),
    ("Swarm", ("Swarm",), 1),
    ("Kernel Version", ("KernelVersion",), 1),
    ("Operating System", ("OperatingSystem",), 1),
    ("OSType", ("OSType",), 1),
    ("Architecture", ("Architecture",), 1),
    ("CPUs", ("NCPU",), 1),
    ("Total Memory", ("MemTotal",), 1),
    ("Name", ("Name",), 1),
    ("ID", ("ID",), 1),
    ("Data Root", ("DockerRootDir", "DataRoot"), 1),
    ("Labels", ("Labels",), 1),
)


@click.command()
def version() -> None:
    """Show the pyswarm version information."""
    show_version()


@click.command()
def info() -> None:
    """Display system-wide information."""
    show_info()


@click.command()
@click.option("--type", "kind", type=click.Choice(OBJECT_KINDS), help="Only inspect this kind.")
@click.argument("names", metavar="NAME|ID...", nargs=-1, required=True)
@click.pass_context
def inspect(ctx: click.Context, kind: str | None, names: tuple[str, ...]) -> None:
    """Return low-level information on containers, images or volumes."""
    ctx.exit(inspect_objects(names, kind=kind))


# ---- actions --------------------------------------------------------------------


def aligned(indent: int, label: str, value: object) -> str:
    return f"{' ' * indent}{label}:".ljust(LABEL_WIDTH) + str(value)


def client_version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("pyswarm")
    except PackageNotFoundError:
        return "unknown"


def client_version_lines() -> list[str]:
    machine = os.uname().machine
    return [
        "Client:",
        aligned(1, "Version", client_version()),
        aligned(1, "Python version", sys.version.split()[0]),
        aligned(1, "OS/Arch", f"{sys.platform}/{GO_ARCH.get(machine, machine)}"),
    ]


def server_version_lines(info: pb.VersionInfo) -> list[str]:
    return [
        "Server: pyswarm Engine",
        " Engine:",
        aligned(2, "Version", info.version),
        aligned(2, "API version", info.api_version),
        aligned(2, "Python version", info.python),
        aligned(2, "OS/Arch", f"{info.os}/{info.arch}"),
        f" {info.runtime or 'runtime'}:",
        aligned(2, "Version", info.runtime_version),
    ]


def show_version() -> None:
    click.echo("\n".join(client_version_lines()))
    with common.engine() as engine:
        server = engine.version()
    click.echo()
    click.echo("\n".join(server_version_lines(server)))


def show_info() -> None:
    click.echo(f"Client:\n Version:    {client_version()}\n")
    with common.engine() as engine:
        text = engine.info()
    click.echo("Server:")
    click.echo("\n".join(info_lines(json.loads(text))))


def info_lines(doc: Mapping[str, Any]) -> list[str]:
    """docker info's server section for the daemon's SystemInfo JSON."""
    lines: list[str] = []
    used: set[str] = set()
    for label, keys, indent in INFO_FIELDS:
        key = next((k for k in keys if k in doc), None)
        if key is not None:
            used.add(key)
            lines += info_field(label, info_value(key, doc[key]), indent)
    for key in sorted(set(doc) - used):
        lines += info_field(key, info_value(key, doc[key]), 1)
    return lines


def info_field(label: str, value: str | list[str], indent: int) -> list[str]:
    pad = " " * indent
    if isinstance(value, list):
        return [f"{pad}{label}:", *(f"{pad} {item}" for item in value)]
    return [f"{pad}{label}: {value}"]


def info_value(key: str, value: Any) -> str | list[str]:
    if key == "MemTotal" and isinstance(value, int):
        return output.bytes_size(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return [str(item) for item in value]
    if isinstance(value, dict):
        if "LocalNodeState" in value:  # docker's Swarm object
            return str(value["LocalNodeState"])
        return " ".join(sorted(value))  # e.g. Runtimes: their names
    return str(value)


def inspect_objects(names: Sequence[str], *, kind: str | None) -> int:
    docs: list[Any] = []
    with common.engine() as engine:
        failed = common.each(
            names, lambda name: docs.append(find_object(engine, name, kind)), echo=False
        )
    click.echo(output.json_array(docs))
    return failed


def find_object(engine: Engine, name: str, kind: str | None) -> Any:
    """The inspect document of `name`: a container, else an image, else a volume."""
    lookups: dict[str, Callable[[], Any]] = {
        "container": lambda: json.loads(engine.container_inspect(name)),
        "image": lambda: json.loads(engine.image_inspect(name)),
        "volume": lambda: volume_doc(engine.volume_inspect(name)),
    }
    for candidate in [kind] if kind else OBJECT_KINDS:
        try:
            return lookups[candidate]()
        except DaemonError as e:
            if kind or e.status != NOT_FOUND:
                raise
    raise DaemonError(f"No such object: {name}", status=NOT_FOUND, hinted_exit_code=None)

"""The `pyswarm` entry point: a lazy click group and the table of its commands.

Start-up time is a feature (`pyswarm run --rm busybox true` should take ~150 ms in
all), so this module imports click and nothing else. Each command is listed as a
"module:attr" target with its one-line help; the module is imported only when the
command runs, and `pyswarm --help` is drawn from the table without importing any.
grpc and the generated api modules are imported by `cli.client` on the first call to
the daemon. To add a command, add an entry to a table below.

Errors are one line on stderr and never a traceback: usage errors print `pyswarm:
<reason>` and exit 1, or the command's `usage_exit_code` (125 for run and create, as
docker's flag errors); a `CommandFailure` prints its message and exits its code.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NamedTuple

import click

DEFAULT_HOST = "unix:///run/pyswarm/pyswarm.sock"
HOST_META = "pyswarm.host"


def current_host() -> str:
    """The daemon chosen by `-H`/`$PYSWARM_HOST` for the command being run."""
    ctx = click.get_current_context(silent=True)
    host = ctx.meta.get(HOST_META, DEFAULT_HOST) if ctx is not None else DEFAULT_HOST
    return str(host)


class Entry(NamedTuple):
    target: str  # "module:attr" of the click command
    help: str  # one line for the group's help; "" hides an alias
    section: str = "Commands"


class CommandFailure(Exception):
    """A failure shown as one line on stderr, exiting with `exit_code`: the base of the
    client's errors (cli.client.CliError), caught by the root group below."""

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Usage errors and CommandFailures as one line on stderr, with docker's exit code;
    Ctrl-C exits 130 quietly."""
    try:
        yield
    except click.exceptions.NoArgsIsHelpError as e:
        click.echo(e.ctx.get_help())
        raise click.exceptions.Exit(0) from None
    except click.UsageError as e:
        code = getattr(e.ctx.command, "usage_exit_code", 1) if e.ctx else 1
        click.echo(f"pyswarm: {e.format_message()}", err=True)
        raise click.exceptions.Exit(code) from None
    except CommandFailure as e:
        click.echo(e.message, err=True)
        raise click.exceptions.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        click.echo(err=True)  # end the ^C line
        raise click.exceptions.Exit(130) from None  # 128 + SIGINT, as a shell reports it


class LazyGroup(click.Group):
    """A group whose commands are imported from their "module:attr" on first use."""

    def __init__(self, *args: Any, lazy: Mapping[str, Entry], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            module_name, _, attr = self.lazy[cmd_name].target.partition(":")
            command = getattr(importlib.import_module(module_name), attr)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        for name, entry in sorted(self.lazy.items()):
            if entry.help:
                sections.setdefault(entry.section, []).append((name, entry.help))
        for section in sorted(sections, reverse=True):  # Management before plain commands
            with formatter.section(section):
                formatter.write_dl(sections[section])

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        with one_line_errors():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with one_line_errors():
            return super().invoke(ctx)


MANAGEMENT = "Management Commands"
RUN = "cli.commands.run"
CONTAINERS = "cli.commands.containers"
IMAGES = "cli.commands.images"
VOLUMES = "cli.commands.volumes"
SYSTEM = "cli.commands.system"
BUILD = "cli.commands.build"
DISTRIBUTION = "cli.commands.distribution"
REGISTRY = "cli.commands.registry"

CONTAINER_COMMANDS = {
    "run": Entry(f"{RUN}:run", "Create and run a new container from an image"),
    "create": Entry(f"{RUN}:create", "Create a new container"),
    "ls": Entry(f"{CONTAINERS}:ps", "List containers"),
    "list": Entry(f"{CONTAINERS}:ps", ""),
    "ps": Entry(f"{CONTAINERS}:ps", ""),
    "start": Entry(f"{CONTAINERS}:start", "Start one or more stopped containers"),
    "stop": Entry(f"{CONTAINERS}:stop", "Stop one or more running containers"),
    "restart": Entry(f"{CONTAINERS}:restart", "Restart one or more containers"),
    "kill": Entry(f"{CONTAINERS}:kill", "Kill one or more running containers"),
    "rm": Entry(f"{CONTAINERS}:rm", "Remove one or more containers"),
    "remove": Entry(f"{CONTAINERS}:rm", ""),
    "logs": Entry(f"{CONTAINERS}:logs", "Fetch the logs of a container"),
    "exec": Entry(f"{CONTAINERS}:exec_", "Execute a command in a running container"),
    "inspect": Entry(
        f"{CONTAINERS}:inspect_containers", "Display detailed information on containers"
    ),
    "wait": Entry(f"{CONTAINERS}:wait", "Block until containers stop, print exit codes"),
    "stats": Entry(f"{CONTAINERS}:stats", "Display resource usage statistics"),
    "prune": Entry(f"{CONTAINERS}:prune", "Remove all stopped containers"),
}

IMAGE_COMMANDS = {
    "ls": Entry(f"{IMAGES}:images", "List images"),
    "list": Entry(f"{IMAGES}:images", ""),
    "inspect": Entry(f"{IMAGES}:inspect_images", "Display detailed information on images"),
    "rm": Entry(f"{IMAGES}:rmi", "Remove one or more images"),
    "remove": Entry(f"{IMAGES}:rmi", ""),
    "prune": Entry(f"{IMAGES}:prune", "Remove unused images"),
    "tag": Entry(f"{IMAGES}:tag", "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE"),
    "import": Entry(f"{IMAGES}:import_", "Import a tarball to create a filesystem image"),
    "save": Entry(f"{IMAGES}:save", "Save images to a tar archive"),
    "load": Entry(f"{IMAGES}:load", "Load images from a tar archive"),
    "build": Entry(f"{BUILD}:build", "Build an image from a Dockerfile"),
    "pull": Entry(f"{DISTRIBUTION}:pull", "Download an image from a registry"),
    "push": Entry(f"{DISTRIBUTION}:push", "Upload an image to a registry"),
}

VOLUME_COMMANDS = {
    "create": Entry(f"{VOLUMES}:create", "Create a volume"),
    "ls": Entry(f"{VOLUMES}:ls", "List volumes"),
    "list": Entry(f"{VOLUMES}:ls", ""),
    "inspect": Entry(f"{VOLUMES}:inspect", "Display detailed information on volumes"),
    "rm": Entry(f"{VOLUMES}:rm", "Remove one or more volumes"),
    "remove": Entry(f"{VOLUMES}:rm", ""),
    "prune": Entry(f"{VOLUMES}:prune", "Remove unused local volumes"),
}

ROOT_COMMANDS = {
    "container": Entry("cli.main:container", "Manage containers", MANAGEMENT),
    "image": Entry("cli.main:image", "Manage images", MANAGEMENT),
    "volume": Entry("cli.main:volume", "Manage volumes", MANAGEMENT),
    "registry": Entry(f"{REGISTRY}:registry", "Run an image registry", MANAGEMENT),
    "swarm": Entry("cli.commands.swarm:swarm", "Manage swarm", MANAGEMENT),
    "node": Entry("cli.commands.node:node", "Manage Swarm nodes", MANAGEMENT),
    "service": Entry("cli.commands.service:service", "Manage Swarm services", MANAGEMENT),
    "secret": Entry("cli.commands.secret:secret", "Manage Swarm secrets", MANAGEMENT),
    "config": Entry("cli.commands.config:config", "Manage Swarm configs", MANAGEMENT),
    "network": Entry("cli.commands.network:network", "Manage networks", MANAGEMENT),
    "stack": Entry("cli.commands.stack:stack", "Manage Swarm stacks", MANAGEMENT),
    "ps": Entry(f"{CONTAINERS}:ps", "List containers"),
    **{
        name: CONTAINER_COMMANDS[name]
        for name in ("run", "create", "start", "stop", "restart", "kill", "rm")
    },
    **{name: CONTAINER_COMMANDS[name] for name in ("logs", "exec", "wait", "stats")},
    "inspect": Entry(f"{SYSTEM}:inspect", "Return low-level information on objects"),
    "images": Entry(f"{IMAGES}:images", "List images"),
    "rmi": IMAGE_COMMANDS["rm"],
    **{
        name: IMAGE_COMMANDS[name]
        for name in ("tag", "import", "save", "load", "build", "pull", "push")
    },
    "login": Entry(f"{DISTRIBUTION}:login", "Log in to a registry"),
    "logout": Entry(f"{DISTRIBUTION}:logout", "Log out from a registry"),
    "version": Entry(f"{SYSTEM}:version", "Show the pyswarm version information"),
    "info": Entry(f"{SYSTEM}:info", "Display system-wide information"),
    "daemon": Entry("cli.daemon:daemon", "Run the pyswarm daemon on this host"),
    "lab": Entry("cli.commands.lab:lab", "Run a lab of pyswarm hosts on this machine", MANAGEMENT),
    "nodesim": Entry("cli.commands.nodesim:nodesim", "Run simulated swarm nodes (scale tests)"),
}


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        from importlib.metadata import version

        click.echo(f"pyswarm version {version('pyswarm')}")
        ctx.exit()


@click.group(cls=LazyGroup, lazy=ROOT_COMMANDS)
@click.option(
    "-H",
    "--host",
    envvar="PYSWARM_HOST",
    default=DEFAULT_HOST,
    show_default=True,
    metavar="URL",
    help="Daemon socket to connect to (unix:///path); also $PYSWARM_HOST.",
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Print version information and quit.",
)
@click.pass_context
def cli(ctx: click.Context, host: str) -> None:
    """pyswarm: containers on one host, and services across a swarm of them."""
    ctx.meta[HOST_META] = host


@cli.group(cls=LazyGroup, lazy=CONTAINER_COMMANDS)
def container() -> None:
    """Manage containers."""


@cli.group(cls=LazyGroup, lazy=IMAGE_COMMANDS)
def image() -> None:
    """Manage images."""


@cli.group(cls=LazyGroup, lazy=VOLUME_COMMANDS)
def volume() -> None:
    """Manage volumes."""


def main() -> None:
    cli.main(prog_name="pyswarm")


if __name__ == "__main__":
    main()

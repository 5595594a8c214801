"""`pyswarm swarm`: init, join, join-token, leave, update, unlock and unlock-key, with
docker's flags and words (`docker swarm ...` reads `pyswarm swarm ...`).

Durations are Go's (`5s`, `1h30m`, `2160h0m0s`) and reach the API in seconds. After
`init` and for `join-token`, the join command shows the token from GetCluster and the
local node's manager address (its ManagerStatus.addr, as docker's). `update` reads the
cluster and writes back its spec with the flags given changed, at the version read.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from cli import parse, swarmclient
from cli.client import CliError
from cli.commands import common
from cli.parse import FlagType

if TYPE_CHECKING:
    from cli.swarmclient import SwarmClient

PROG = "pyswarm"
DEFAULT_LISTEN_ADDR = f"0.0.0.0:{swarmclient.DEFAULT_PORT}"
ROLES = swarmclient.ROLES


# ---- flag parsers -----------------------------------------------------------------


def parse_cidr(value: str) -> str:
    import ipaddress

    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"invalid CIDR address: {value}") from None
    if "/" not in value:
        raise ValueError(f"invalid CIDR address: {value}")
    return value


def parse_uint32(value: str) -> int:
    number = parse.parse_int(value)
    if not 0 <= number < 1 << 32:
        raise ValueError(f'strconv.ParseUint: parsing "{value}": value out of range')
    return number


def parse_listen_addr(value: str) -> str:
    """`HOST[:PORT]` -> `HOST:PORT` (port 2377 when missing)."""
    if value in ("", ":"):
        raise ValueError(f"invalid address: '{value}'")
    if value.startswith(":"):
        return f"0.0.0.0{value}"
    return swarmclient.with_port(value, swarmclient.DEFAULT_PORT)


def parse_bool(value: str) -> bool:
    """Go's strconv.ParseBool, as docker's `--autolock=true|false`."""
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(f'strconv.ParseBool: parsing "{value}": invalid syntax')


DURATION = FlagType("duration", parse.parse_duration)
AVAILABILITY = FlagType("active|pause|drain", swarmclient.parse_availability)
CIDR = FlagType("CIDR", parse_cidr)
UINT32 = FlagType("uint32", parse_uint32)
LISTEN_ADDR = FlagType("ADDR", parse_listen_addr)
BOOL = FlagType("true|false", parse_bool)


# ---- commands ---------------------------------------------------------------------


F = TypeVar("F", bound=Callable[..., Any])


def node_addresses(fn: F) -> F:
    """--advertise-addr and --listen-addr, as init and join share them."""
    fn = click.option(
        "--listen-addr",
        type=LISTEN_ADDR,
        default=DEFAULT_LISTEN_ADDR,
        show_default=True,
        help="Listen address (<ip|interface>[:port]).",
    )(fn)
    return click.option(
        "--advertise-addr",
        default="",
        metavar="ADDR",
        help="Advertised address (<ip|interface>[:port]).",
    )(fn)


availability_option = click.option(
    "--availability",
    type=AVAILABILITY,
    default="active",
    show_default=True,
    help='Availability of the node ("active", "pause", "drain").',
)


@click.group()
def swarm() -> None:
    """Manage swarm."""


@swarm.command("init")
@node_addresses
@click.option(
    "--default-addr-pool",
    type=CIDR,
    multiple=True,
    help="Default address pool in CIDR format (repeatable).",
)
@click.option(
    "--default-addr-pool-mask-length",
    type=UINT32,
    default="24",
    show_default=True,
    help="Default address pool subnet mask length.",
)
@click.option(
    "--dispatcher-heartbeat",
    type=DURATION,
    default="5s",
    show_default=True,
    help="Dispatcher heartbeat period (ns|us|ms|s|m|h).",
)
@click.option(
    "--cert-expiry",
    type=DURATION,
    default="2160h0m0s",
    show_default=True,
    help="Validity period for node certificates (ns|us|ms|s|m|h).",
)
@click.option(
    "--task-history-limit",
    type=common.INT,
    default="5",
    show_default=True,
    help="Task history retention limit.",
)
@click.option(
    "--autolock",
    is_flag=True,
    help="Enable manager autolocking (requiring an unlock key to start a stopped manager).",
)
@click.option(
    "--force-new-cluster", is_flag=True, help="Force create a new cluster from current state."
)
@availability_option
def init(
    advertise_addr: str,
    listen_addr: str,
    default_addr_pool: tuple[str, ...],
    default_addr_pool_mask_length: int,
    dispatcher_heartbeat: float,
    cert_expiry: float,
    task_history_limit: int,
    autolock: bool,
    force_new_cluster: bool,
    availability: int,
) -> None:
    """Initialize a swarm."""
    with swarmclient.current() as client:
        response = client.init(
            advertise_addr=advertise_addr,
            listen_addr=listen_addr,
            default_addr_pool=list(default_addr_pool),
            default_addr_pool_mask_length=default_addr_pool_mask_length,
            dispatcher_heartbeat=dispatcher_heartbeat,
            cert_expiry=cert_expiry,
            task_history_limit=task_history_limit,
            autolock=autolock,
            force_new_cluster=force_new_cluster,
            availability=availability,
        )
        click.echo(f"Swarm initialized: current node ({response.node_id}) is now a manager.\n")
        print_join_command(client, response.node_id, worker=True, manager=False)
        click.echo(
            f"To add a manager to this swarm, run '{PROG} swarm join-token manager' "
            "and follow the instructions.\n"
        )
        if autolock:
            print_unlock_command(response.unlock_key or fetch_unlock_key(client))


@swarm.command("join")
@click.option("--token", required=True, help="Token for entry into the swarm.")
@node_addresses
@availability_option
@click.argument("remote", metavar="HOST:PORT")
def join(token: str, advertise_addr: str, listen_addr: str, availability: int, remote: str) -> None:
    """Join a swarm as a node and/or manager."""
    with swarmclient.current() as client:
        response = client.join(
            remote,
            token=token,
            advertise_addr=advertise_addr,
            listen_addr=listen_addr,
            availability=availability,
        )
    click.echo(f"This node joined a swarm as a {ROLES[response.role]}.")


@swarm.command("join-token")
@click.option("-q", "--quiet", is_flag=True, help="Only display token.")
@click.option("--rotate", is_flag=True, help="Rotate join token.")
@click.argument("role", metavar="(worker|manager)")
def join_token(quiet: bool, rotate: bool, role: str) -> None:
    """Manage join tokens."""
    if role not in ROLES:
        raise click.UsageError(f"unknown role {role}")
    worker, manager = role == "worker", role == "manager"
    with swarmclient.current() as client:
        if rotate:
            cluster = client.get_cluster()
            client.update_cluster(
                version=cluster.meta.version,
                spec=cluster.spec,
                rotate_worker_token=worker,
                rotate_manager_token=manager,
            )
            if not quiet:
                click.echo(f"Successfully rotated {role} join token.\n")
        tokens = client.get_cluster().root_ca.join_tokens
        if quiet:
            click.echo(tokens.worker if worker else tokens.manager)
            return
        print_join_command(client, client.info().node_id, worker=worker, manager=manager)


@swarm.command("leave")
@click.option(
    "-f",
    "--force",
    is_flag=True,
    help="Force this node to leave the swarm, ignoring warnings.",
)
def leave(force: bool) -> None:
    """Leave the swarm."""
    with swarmclient.current() as client:
        client.leave(force=force)
    click.echo("Node left the swarm.")


@swarm.command("update")
@click.option(
    "--dispatcher-heartbeat", type=DURATION, help="Dispatcher heartbeat period (ns|us|ms|s|m|h)."
)
@click.option(
    "--cert-expiry", type=DURATION, help="Validity period for node certificates (ns|us|ms|s|m|h)."
)
@click.option("--task-history-limit", type=common.INT, help="Task history retention limit.")
@click.option(
    "--autolock",
    type=BOOL,
    is_flag=False,
    flag_value="true",
    default=None,
    help="Change manager autolocking setting (true|false; alone: true).",
)
def update(
    dispatcher_heartbeat: float | None,
    cert_expiry: float | None,
    task_history_limit: int | None,
    autolock: bool | None,
) -> None:
    """Update the swarm."""
    with swarmclient.current() as client:
        cluster = client.get_cluster()
        spec = cluster.spec
        was_locked = spec.autolock
        if dispatcher_heartbeat is not None:
            spec.heartbeat_period = dispatcher_heartbeat
        if cert_expiry is not None:
            spec.node_cert_expiry = cert_expiry
        if task_history_limit is not None:
            spec.task_history_limit = task_history_limit
        if autolock is not None:
            spec.autolock = autolock
        client.update_cluster(version=cluster.meta.version, spec=spec)
        click.echo("Swarm updated.")
        if spec.autolock and not was_locked:
            print_unlock_command(fetch_unlock_key(client))


@swarm.command("unlock")
def unlock() -> None:
    """Unlock swarm."""
    with swarmclient.current() as client:
        state = client.info().local_node_state
        if state == "inactive":
            raise CliError("Error: This node is not part of a swarm")
        if state != "locked":
            raise CliError("Error: swarm is not locked")
        client.unlock(read_key("Enter unlock key"))


@swarm.command("unlock-key")
@click.option("-q", "--quiet", is_flag=True, help="Only display token.")
@click.option("--rotate", is_flag=True, help="Rotate unlock key.")
def unlock_key(quiet: bool, rotate: bool) -> None:
    """Manage the unlock key."""
    with swarmclient.current() as client:
        if rotate:
            cluster = client.get_cluster()
            if not cluster.spec.autolock:
                raise CliError("cannot rotate because autolock is not turned on")
            client.update_cluster(
                version=cluster.meta.version, spec=cluster.spec, rotate_unlock_key=True
            )
            if not quiet:
                click.echo("Successfully rotated manager unlock key.\n")
        key = fetch_unlock_key(client)
    if not key:
        raise CliError("no unlock key is set")
    if quiet:
        click.echo(key)
    else:
        print_unlock_command(key)


# ---- output -----------------------------------------------------------------------


def print_join_command(client: SwarmClient, node_id: str, *, worker: bool, manager: bool) -> None:
    """docker's "To add a worker/manager to this swarm, run ..." paragraphs."""
    tokens = client.get_cluster().root_ca.join_tokens
    addr = client.manager_addr(node_id)
    for role, wanted, token in (
        ("worker", worker, tokens.worker),
        ("manager", manager, tokens.manager),
    ):
        if wanted:
            click.echo(
                f"To add a {role} to this swarm, run the following command:\n\n"
                f"    {PROG} swarm join --token {token} {addr}\n"
            )


def print_unlock_command(key: str) -> None:
    if key:
        click.echo(
            f"To unlock a swarm manager after it restarts, run the `{PROG} swarm unlock`\n"
            f"command and provide the following key:\n\n    {key}\n\n"
            "Please remember to store this key in a password manager, since without it you\n"
            "will not be able to restart the manager."
        )


def fetch_unlock_key(client: SwarmClient) -> str:
    try:
        return client.get_unlock_key()
    except CliError as e:
        raise CliError(f"could not fetch unlock key: {e.message}") from None


def read_key(prompt: str) -> str:
    """The unlock key: typed, unechoed, on a terminal; else the first line of stdin."""
    if sys.stdin.isatty():
        key: str = click.prompt(prompt, hide_input=True, prompt_suffix=": ")
        return key.strip()
    return sys.stdin.readline().strip()

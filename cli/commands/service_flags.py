"""The flags of `service create` and `service update`, with docker's names and help.

Every option defaults to None (or an empty tuple): "not given", so that `update`
changes only what was named and `create` applies docker's defaults itself
(`cli.servicespec`). Values arrive parsed (durations in seconds, CPUs in nano CPUs,
memory in bytes, enums as their proto values).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click

from cli import parse
from cli import servicespec as ss
from cli.parse import FlagType

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

UINT = FlagType("UINT", ss.parse_uint)
INT = FlagType("INT", parse.parse_int)
DURATION = FlagType("DURATION", parse.parse_duration)
CPUS = FlagType("DECIMAL", parse.parse_cpus)
BYTES = FlagType("BYTES", parse.parse_memory)
RATIO = FlagType("FLOAT", ss.parse_ratio)
SIGNAL = FlagType("SIGNAL", parse.parse_signal)
LABEL = FlagType("K=V", parse.parse_label)
MOUNT = FlagType("MOUNT", ss.parse_mount)
FILE_REF = FlagType("SPEC", ss.parse_file_ref)
PLACEMENT_PREF = FlagType("PREF", ss.parse_placement_pref)
NETWORK = FlagType("NETWORK", ss.parse_network)
PUBLISH = FlagType("PORT", ss.parse_publish)
WORDS = FlagType("COMMAND", ss.parse_entrypoint)
DNS = FlagType("IP", ss.parse_dns)
DNS_SEARCH = FlagType("DOMAIN", ss.parse_dns_search)
DNS_OPTION = FlagType("OPTION", ss.parse_dns_option)
HOST = FlagType("HOST:IP", ss.parse_host)
HOST_RM = FlagType("HOST[:IP]", ss.parse_host_rm)
ENV = FlagType("ENV", lambda v: parse.parse_env(v, os.environ))
ENV_FILE = FlagType("FILE", lambda v: parse.read_env_file(v, os.environ))


def opt(*names: str, help: str, multiple: bool = False, **kwargs: Any) -> Decorator:
    return click.option(*names, help=help, multiple=multiple, default=None, **kwargs)


def flag(*names: str, help: str) -> Decorator:
    return click.option(*names, is_flag=True, default=None, help=help)


def update_config_options(prefix: str) -> list[Decorator]:
    """--update-* or --rollback-*: docker's UpdateConfig flags."""
    what = "update" if prefix == "update" else "rollback"
    actions = "pause|continue|rollback" if what == "update" else "pause|continue"
    parser = ss.parse_failure_action if what == "update" else ss.parse_rollback_failure_action
    quoted = ", ".join(f'"{a}"' for a in actions.split("|"))
    return [
        opt(
            f"--{prefix}-parallelism",
            type=UINT,
            help=f"Maximum number of tasks {'updated' if what == 'update' else 'rolled back'} "
            "simultaneously (0 to do all at once).",
        ),
        opt(f"--{prefix}-delay", type=DURATION, help=f"Delay between {what}s (ns|us|ms|s|m|h)."),
        opt(
            f"--{prefix}-failure-action",
            type=FlagType(actions, parser),
            help=f"Action on {what} failure ({quoted}).",
        ),
        opt(
            f"--{prefix}-monitor",
            type=DURATION,
            help=f"Duration after each task {what} to monitor for failure (ns|us|ms|s|m|h).",
        ),
        opt(
            f"--{prefix}-max-failure-ratio",
            type=RATIO,
            help=f"Failure rate to tolerate during a{'n' if what == 'update' else ''} {what}.",
        ),
        opt(
            f"--{prefix}-order",
            type=FlagType("stop-first|start-first", ss.parse_order),
            help=f'{what.title()} order ("start-first", "stop-first").',
        ),
    ]


COMMON: list[Decorator] = [
    flag("-d", "--detach", help="Exit immediately instead of waiting for the service to converge."),
    flag("-q", "--quiet", help="Suppress progress output."),
    opt("--replicas", type=UINT, help="Number of tasks."),
    opt(
        "--max-concurrent",
        type=UINT,
        help="Number of job tasks to run concurrently (default equal to --replicas).",
    ),
    opt(
        "--replicas-max-per-node",
        type=UINT,
        help="Maximum number of tasks per node (0 = unlimited).",
    ),
    opt("--reserve-cpu", type=CPUS, help="Reserve CPUs."),
    opt("--reserve-memory", type=BYTES, help="Reserve Memory."),
    opt("--limit-cpu", type=CPUS, help="Limit CPUs."),
    opt("--limit-memory", type=BYTES, help="Limit Memory."),
    opt("--limit-pids", type=INT, help="Limit maximum number of processes (0 = unlimited)."),
    opt(
        "--restart-condition",
        type=FlagType("none|on-failure|any", ss.parse_restart_condition),
        help='Restart when condition is met ("none", "on-failure", "any") (default "any").',
    ),
    opt(
        "--restart-delay",
        type=DURATION,
        help="Delay between restart attempts (ns|us|ms|s|m|h) (default 5s).",
    ),
    opt("--restart-max-attempts", type=UINT, help="Maximum number of restarts before giving up."),
    opt(
        "--restart-window",
        type=DURATION,
        help="Window used to evaluate the restart policy (ns|us|ms|s|m|h).",
    ),
    *update_config_options("update"),
    *update_config_options("rollback"),
    opt("--health-cmd", metavar="STRING", help="Command to run to check health."),
    opt("--health-interval", type=DURATION, help="Time between running the check (ms|s|m|h)."),
    opt(
        "--health-timeout", type=DURATION, help="Maximum time to allow one check to run (ms|s|m|h)."
    ),
    opt("--health-retries", type=INT, help="Consecutive failures needed to report unhealthy."),
    opt(
        "--health-start-period",
        type=DURATION,
        help="Start period for the container to initialize before counting retries towards "
        "unstable (ms|s|m|h).",
    ),
    flag("--no-healthcheck", help="Disable any container-specified HEALTHCHECK."),
    opt("--hostname", metavar="STRING", help="Container hostname."),
    opt(
        "-u", "--user", metavar="STRING", help="Username or UID (format: <name|uid>[:<group|gid>])."
    ),
    opt("-w", "--workdir", metavar="STRING", help="Working directory inside the container."),
    opt("--entrypoint", type=WORDS, help="Overwrite the default ENTRYPOINT of the image."),
    flag("--read-only", help="Mount the container's root filesystem as read only."),
    opt("--cap-add", multiple=True, metavar="CAP", help="Add Linux capabilities."),
    opt("--cap-drop", multiple=True, metavar="CAP", help="Drop Linux capabilities."),
    opt(
        "--stop-grace-period",
        type=DURATION,
        help="Time to wait before force killing a container (ns|us|ms|s|m|h) (default 10s).",
    ),
    opt("--stop-signal", type=SIGNAL, help="Signal to stop the container."),
    opt(
        "--endpoint-mode",
        type=FlagType("vip|dnsrr", ss.parse_endpoint_mode),
        help='Endpoint mode ("vip" or "dnsrr") (default "vip").',
    ),
]

CREATE: list[Decorator] = [
    opt("--name", metavar="STRING", help="Service name."),
    opt(
        "--mode",
        type=FlagType("MODE", ss.parse_mode),
        help='Service mode ("replicated", "global", "replicated-job", "global-job") '
        '(default "replicated").',
    ),
    opt("-e", "--env", type=ENV, multiple=True, help="Set environment variables."),
    opt(
        "--env-file", type=ENV_FILE, multiple=True, help="Read in a file of environment variables."
    ),
    opt("--mount", type=MOUNT, multiple=True, help="Attach a filesystem mount to the service."),
    opt("--constraint", multiple=True, metavar="EXPR", help="Placement constraints."),
    opt("--placement-pref", type=PLACEMENT_PREF, multiple=True, help="Add a placement preference."),
    opt("--secret", type=FILE_REF, multiple=True, help="Specify secrets to expose to the service."),
    opt(
        "--config",
        type=FILE_REF,
        multiple=True,
        help="Specify configurations to expose to the service.",
    ),
    opt("-l", "--label", type=LABEL, multiple=True, help="Service labels."),
    opt("--container-label", type=LABEL, multiple=True, help="Container labels."),
    opt("--network", type=NETWORK, multiple=True, help="Network attachments."),
    opt("-p", "--publish", type=PUBLISH, multiple=True, help="Publish a port as a node port."),
    opt("--dns", type=DNS, multiple=True, help="Set custom DNS servers."),
    opt("--dns-search", type=DNS_SEARCH, multiple=True, help="Set custom DNS search domains."),
    opt("--dns-option", type=DNS_OPTION, multiple=True, help="Set DNS options."),
    opt(
        "--host",
        type=HOST,
        multiple=True,
        help="Set one or more custom host-to-IP mappings (host:ip).",
    ),
]


def add_rm(name: str, what: str, add_type: Any = None, rm_type: Any = None) -> list[Decorator]:
    return [
        opt(f"--{name}-add", type=add_type, multiple=True, help=f"Add or update {what}."),
        opt(f"--{name}-rm", type=rm_type, multiple=True, help=f"Remove {what}."),
    ]


UPDATE: list[Decorator] = [
    opt("--image", metavar="STRING", help="Service image tag."),
    opt("--args", type=WORDS, help="Service command args."),
    flag("--force", help="Force update even if no changes require it."),
    flag("--rollback", help="Rollback to previous specification."),
    *add_rm("env", "an environment variable", ENV),
    *add_rm("mount", "a mount by its target path", MOUNT),
    *add_rm("constraint", "a placement constraint"),
    *add_rm("placement-pref", "a placement preference", PLACEMENT_PREF, PLACEMENT_PREF),
    *add_rm("secret", "a secret", FILE_REF),
    *add_rm("config", "a configuration file", FILE_REF),
    *add_rm("label", "a service label", LABEL),
    *add_rm("container-label", "a container label", LABEL),
    *add_rm("network", "a network", NETWORK),
    *add_rm("publish", "a published port", PUBLISH, FlagType("PORT[/PROTO]", ss.parse_publish_rm)),
    *add_rm("dns", "a custom DNS server", DNS),
    *add_rm("dns-search", "a DNS search domain", DNS_SEARCH),
    *add_rm("dns-option", "a DNS option", DNS_OPTION),
    *add_rm("host", "a custom host-to-IP mapping (host:ip)", HOST, HOST_RM),
]


def apply(options: list[Decorator]) -> Decorator:
    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate

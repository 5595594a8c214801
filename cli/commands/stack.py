"""`pyswarm stack`: deploy, ls, ps, services, rm and config, with docker's words.

`stack deploy -c FILE NAME` reads the compose files (`cli.compose.load`: safe YAML,
interpolation, merge; `cli.compose.normalize`: the typed project), then makes what the
stack needs in order: networks, secrets and configs that do not exist yet, then the
services in dependency order (`depends_on`), each waiting for its dependencies'
condition (started: a task running; healthy: every replica running, which for a
service with a health check means healthy; completed successfully: its job done).
A redeploy updates only the services whose spec changed (`convert.HASH_LABEL`), as a
rolling update per their update_config; `--prune` removes the stack's services that
are no longer in the file. Everything made carries `com.docker.stack.namespace`,
which is how `ls`, `ps`, `services` and `rm` find a stack's objects.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cli import serviceclient
from cli.client import CliError
from cli.commands import common
from cli.commands import service as service_cmd
from cli.serviceclient import NoSuchObject, ServiceClient

if TYPE_CHECKING:
    from api import objects_pb2 as opb
    from cli.compose import model

DEPENDENCY_TIMEOUT = 300.0  # seconds a service waits for its dependencies
REMOVE_TIMEOUT = 60.0  # seconds `stack rm` waits for tasks to leave before networks go


def _project(files: Sequence[str]) -> model.Project:
    from cli.compose.load import ComposeError, load
    from cli.compose.normalize import normalize

    try:
        project = normalize(load(files, environ=dict(os.environ), stdin=sys.stdin))
    except ComposeError as exc:
        raise CliError(str(exc)) from None
    for warning in project.warnings:
        click.echo(warning, err=True)
    return project


def _namespace(labels: Any, stack: str) -> bool:
    from cli.compose.convert import NAMESPACE_LABEL

    return bool(labels.get(NAMESPACE_LABEL) == stack)


@click.group(cls=common.ObjectGroup)
def stack() -> None:
    """Manage Swarm stacks."""


compose_files = click.option(
    "-c",
    "--compose-file",
    "files",
    multiple=True,
    required=True,
    metavar="FILE",
    help="Path to a Compose file, or '-' to read from stdin (repeatable: later files "
    "override earlier ones).",
)


@stack.command("config")
@compose_files
def config(files: tuple[str, ...]) -> None:
    """Outputs the final config file, after doing merges and interpolations."""
    from cli.compose.normalize import dump

    click.echo(dump(_project(files)), nl=False)


@stack.command("deploy")
@compose_files
@click.option("--prune", is_flag=True, help="Prune services that are no longer referenced.")
@click.option(
    "--resolve-image",
    type=click.Choice(("always", "changed", "never")),
    default="always",
    help="Query the registry to resolve image digest and supported platforms.",
)
@click.option("--build", is_flag=True, help="Build the services' images (build:) first.")
@click.option("-d", "--detach", is_flag=True, default=True, help="Exit immediately.")
@click.argument("name")
def deploy(
    files: tuple[str, ...], prune: bool, resolve_image: str, build: bool, detach: bool, name: str
) -> None:
    """Deploy a new stack or update an existing stack."""
    del resolve_image, detach  # the managers always pin images; deploy is detached
    project = _project(files)
    with serviceclient.current() as client:
        _deploy(client, project, name, build=build, prune=prune)


def _deploy(
    client: ServiceClient, project: model.Project, stack_name: str, *, build: bool, prune: bool
) -> None:
    from cli.compose import convert

    existing_networks = {n.spec.name: n for n in client.list_networks()}
    used = {a.name for s in project.services.values() for a in s.networks}
    for key in sorted(used):
        network = project.networks[key]
        network_name = convert.network_name(stack_name, network)
        if network.external:
            if network_name not in existing_networks:
                raise CliError(f'network "{network_name}" is declared as external, but could '
                               "not be found. You need to create a swarm-scoped network before "
                               "the stack is deployed")  # fmt: skip
            continue
        if network_name not in existing_networks:
            click.echo(f"Creating network {network_name}")
            client.create_network(convert.network_spec(stack_name, network))
    _files(client, project, stack_name)
    services = {s.service.spec.name: s.service for s in client.list_services()}
    for key in convert.deploy_order(project.services):
        service = project.services[key]
        image = _image(stack_name, service, build=build)
        spec = convert.service_spec(stack_name, service, project, image=image)
        for dependency in service.depends_on:
            _wait_for(client, convert.scoped(stack_name, dependency.service), dependency.condition)
        current = services.get(spec.name)
        if current is None:
            click.echo(f"Creating service {spec.name}")
            client.create_service(spec)
        elif current.spec.labels.get(convert.HASH_LABEL) != spec.labels[convert.HASH_LABEL]:
            click.echo(f"Updating service {spec.name} (id: {current.meta.id})")
            client.update_service(current.meta.id, version=current.meta.version, spec=spec)
    if prune:
        wanted = {convert.scoped(stack_name, key) for key in project.services}
        for name, current in sorted(services.items()):
            if _namespace(current.spec.labels, stack_name) and name not in wanted:
                click.echo(f"Removing service {name}")
                client.remove_service(current.meta.id)


def _files(client: ServiceClient, project: model.Project, stack_name: str) -> None:
    """Secrets and configs the stack names: created from their file or environment
    variable when missing (both are immutable, as docker's)."""
    from cli.compose import convert

    for kind, specs, listed, create in (
        ("secret", project.secrets, client.list_secrets, client.create_secret),
        ("config", project.configs, client.list_configs, client.create_config),
    ):
        have = {f.spec.name for f in listed()}
        for key in sorted(specs):
            spec = specs[key]
            name = convert.file_name(stack_name, spec)
            if spec.external:
                if name not in have:
                    raise CliError(f"{kind} not found: {name}")
                continue
            if name in have:
                continue
            if spec.file is not None:
                try:
                    data = Path(spec.file).read_bytes()
                except OSError as exc:
                    raise CliError(f"{kind} {key}: {spec.file}: {exc.strerror}") from None
            else:
                data = os.environ.get(spec.environment or "", "").encode()
            click.echo(f"Creating {kind} {name}")
            labels = dict(spec.labels)
            labels[convert.NAMESPACE_LABEL] = stack_name
            create(name, data, labels=labels)


def _image(stack_name: str, service: model.Service, *, build: bool) -> str:
    image = service.image or f"{stack_name}_{service.name}"
    if service.build is None:
        return image
    if not build:
        click.echo(f"Ignoring build for service {service.name}: deploy with --build", err=True)
        return image
    from cli.commands.build import build_image, dockerfile_in_context

    context = Path(service.build.context)
    dockerfile, extra = dockerfile_in_context(context, str(context / service.build.dockerfile))
    click.echo(f"Building {service.name} ({image})")
    build_image(
        context,
        tags=(image,),
        dockerfile=dockerfile,
        extra=extra,
        build_args=dict(service.build.args),
        target=service.build.target,
        no_cache=False,
        pull=False,
        labels={},
        quiet=True,
    )
    return image


def _wait_for(client: ServiceClient, name: str, condition: str) -> None:
    """Until the dependency `name` meets `condition` (docker compose's words)."""
    from api import objects_pb2 as opb

    deadline = time.monotonic() + DEPENDENCY_TIMEOUT

    def met() -> bool:
        info = next((i for i in client.list_services() if i.service.spec.name == name), None)
        if info is None:
            return False
        if condition == "service_completed_successfully":
            tasks = client.list_tasks(services=[info.service.meta.id])
            return bool(tasks) and all(
                t.status.state == opb.TASK_COMPLETE for t in tasks if t.desired_state <= opb.TASK_COMPLETE
            )  # fmt: skip
        if condition == "service_healthy":
            return info.running >= max(info.desired, 1)
        return info.running >= 1

    while not met():
        if time.monotonic() > deadline:
            raise CliError(f"dependency {name} did not become {condition.removeprefix('service_')}")
        time.sleep(0.5)


@stack.command("ls")
@common.format_option
def ls(fmt: str | None) -> None:
    """List stacks."""
    from cli.compose.convert import NAMESPACE_LABEL

    with serviceclient.current() as client:
        infos = client.list_services()
    counts: dict[str, int] = {}
    for info in infos:
        stack_name = info.service.spec.labels.get(NAMESPACE_LABEL)
        if stack_name:
            counts[stack_name] = counts.get(stack_name, 0) + 1
    rows = [
        {"Name": n, "Services": str(c), "Orchestrator": "Swarm"} for n, c in sorted(counts.items())
    ]
    common.print_rows(fmt, ("NAME", "SERVICES"), rows, [[r["Name"], r["Services"]] for r in rows])


def _stack_services(client: ServiceClient, stack_name: str) -> list[opb.Service]:
    found = [
        i.service for i in client.list_services() if _namespace(i.service.spec.labels, stack_name)
    ]
    if not found:
        raise CliError(f"Nothing found in stack: {stack_name}")
    return sorted(found, key=lambda s: s.spec.name)


@stack.command("services")
@common.format_option
@click.option("-q", "--quiet", is_flag=True, help="Only display IDs.")
@click.argument("name")
def services(fmt: str | None, quiet: bool, name: str) -> None:
    """List the services in the stack."""
    with serviceclient.current() as client:
        found = {s.meta.id for s in _stack_services(client, name)}
        infos = [i for i in client.list_services() if i.service.meta.id in found]
    service_cmd.print_services(infos, quiet=quiet, fmt=fmt)


@stack.command("ps")
@common.format_option
@click.option("--no-trunc", is_flag=True, help="Do not truncate output.")
@click.option("-q", "--quiet", is_flag=True, help="Only display task IDs.")
@click.argument("name")
def ps(fmt: str | None, no_trunc: bool, quiet: bool, name: str) -> None:
    """List the tasks in the stack."""
    with serviceclient.current() as client:
        refs = [s.meta.id for s in _stack_services(client, name)]
    sys.exit(
        service_cmd.list_tasks(refs, (), fmt=fmt, no_resolve=False, no_trunc=no_trunc, quiet=quiet)
    )


@stack.command("rm")
@click.argument("names", metavar="STACK...", nargs=-1, required=True)
def rm(names: tuple[str, ...]) -> None:
    """Remove one or more stacks."""
    failed = False
    with serviceclient.current() as client:
        for stack_name in names:
            failed |= not _remove(client, stack_name)
    sys.exit(1 if failed else 0)


def _remove(client: ServiceClient, stack_name: str) -> bool:
    """Services first, then (once their tasks are gone) networks, secrets, configs."""
    services = [
        i.service for i in client.list_services() if _namespace(i.service.spec.labels, stack_name)
    ]
    networks = [n for n in client.list_networks() if _namespace(n.spec.labels, stack_name)]
    secrets = [s for s in client.list_secrets() if _namespace(s.spec.labels, stack_name)]
    configs = [c for c in client.list_configs() if _namespace(c.spec.labels, stack_name)]
    if not (services or networks or secrets or configs):
        click.echo(f"Nothing found in stack: {stack_name}", err=True)
        return False
    ok = True
    for service in sorted(services, key=lambda s: s.spec.name):
        click.echo(f"Removing service {service.spec.name}")
        ok &= _quietly(functools.partial(client.remove_service, service.meta.id))
    for secret in sorted(secrets, key=lambda o: o.spec.name):
        click.echo(f"Removing secret {secret.spec.name}")
        ok &= _quietly(functools.partial(client.remove_secret, secret.meta.id))
    for config in sorted(configs, key=lambda o: o.spec.name):
        click.echo(f"Removing config {config.spec.name}")
        ok &= _quietly(functools.partial(client.remove_config, config.meta.id))
    for network in sorted(networks, key=lambda n: n.spec.name):
        click.echo(f"Removing network {network.spec.name}")
        ok &= _retrying(functools.partial(client.remove_network, network.meta.id))
    return ok


def _quietly(step: Callable[[], None]) -> bool:
    try:
        step()
    except (CliError, NoSuchObject) as exc:
        click.echo(f"Error: {exc}", err=True)
        return False
    return True


def _retrying(step: Callable[[], None]) -> bool:
    """A network is removable once the removed services' tasks have let go of it."""
    deadline = time.monotonic() + REMOVE_TIMEOUT
    while True:
        try:
            step()
            return True
        except NoSuchObject:
            return True
        except CliError as exc:
            if "in use" not in str(exc) or time.monotonic() > deadline:
                click.echo(f"Error: {exc}", err=True)
                return False
        time.sleep(0.5)

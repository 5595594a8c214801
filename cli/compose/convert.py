"""A normalised compose project (cli.compose.model) as the swarm's objects.

Names follow docker's `stack deploy`: `<stack>_<key>` for services, networks, secrets
and configs (or the explicit `name:` of a network, secret or config), each labelled
`com.docker.stack.namespace=<stack>`, which is how `stack ls|ps|services|rm` find
what a stack made. Each service also carries `com.pyswarm.stack.spec-hash`, a digest
of the spec the file asks for, so a redeploy updates exactly the services whose
spec changed (the managers pin images and resolve names, so the stored spec cannot
be compared with the file's directly).

Protos are imported inside the functions (the cli loads grpc/api lazily).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

from cli.compose import model

if TYPE_CHECKING:
    from api import objects_pb2 as opb

NAMESPACE_LABEL = "com.docker.stack.namespace"
IMAGE_LABEL = "com.docker.stack.image"
HASH_LABEL = "com.pyswarm.stack.spec-hash"
MODES = {"replicated": 0, "global": 1, "replicated-job": 2, "global-job": 3}
CONDITIONS = {"any": 0, "on-failure": 1, "none": 2}
FAILURE_ACTIONS = {"pause": 0, "continue": 1, "rollback": 2}


def scoped(stack: str, key: str, explicit: str | None = None) -> str:
    return explicit if explicit else f"{stack}_{key}"


def network_name(stack: str, network: model.Network) -> str:
    if network.external:
        return network.name
    return network.name if network.name != network.key else scoped(stack, network.key)


def file_name(stack: str, spec: model.FileSpec) -> str:
    if spec.external:
        return spec.name
    return spec.name if spec.name != spec.key else scoped(stack, spec.key)


def network_spec(stack: str, network: model.Network) -> opb.NetworkSpec:
    from api import objects_pb2 as opb

    spec = opb.NetworkSpec(
        name=network_name(stack, network),
        driver=network.driver or "overlay",
        attachable=network.attachable,
        internal=network.internal,
    )
    spec.labels.update(network.labels)
    spec.labels[NAMESPACE_LABEL] = stack
    spec.options.update(network.driver_opts)
    if network.subnets:
        subnet, gateway, ip_range = network.subnets[0]
        spec.ipam.subnet, spec.ipam.gateway, spec.ipam.ip_range = (
            subnet or "",
            gateway or "",
            ip_range or "",
        )
    return spec


def service_spec(
    stack: str,
    service: model.Service,
    project: model.Project,
    *,
    image: str,
) -> opb.ServiceSpec:
    """The ServiceSpec for one compose service; networks, secrets and configs by name."""
    from api import objects_pb2 as opb

    spec = opb.ServiceSpec(name=scoped(stack, service.name))
    deploy = service.deploy
    spec.labels.update(deploy.labels)
    spec.labels[NAMESPACE_LABEL] = stack
    spec.labels[IMAGE_LABEL] = image
    spec.mode = MODES[deploy.mode]  # type: ignore[assignment]
    if deploy.mode in ("replicated", "replicated-job"):
        spec.replicas = 1 if deploy.replicas is None else deploy.replicas
    container = spec.task.container
    container.image = image
    if service.entrypoint is not None:
        container.command.extend(service.entrypoint)
        container.command_set = True
    if service.command is not None:
        container.args.extend(service.command)
    container.env.extend(f"{k}={v}" for k, v in sorted(service.environment.items()))
    container.dir = service.working_dir or ""
    container.user = service.user or ""
    container.hostname = service.hostname or ""
    container.labels.update(service.labels)
    container.labels[NAMESPACE_LABEL] = stack
    container.read_only = service.read_only
    container.cap_add.extend(service.cap_add)
    container.cap_drop.extend(service.cap_drop)
    if service.stop_signal:
        container.stop_signal = service.stop_signal
    if service.stop_grace_period is not None:
        container.stop_grace_period = service.stop_grace_period
    container.dns_nameservers.extend(service.dns)
    container.dns_search.extend(service.dns_search)
    for entry in service.extra_hosts:  # "NAME:IP" -> docker's "IP NAME"
        name, _, address = entry.partition(":")
        container.hosts.append(f"{address} {name}")
    for mount in service.volumes:
        source = mount.source
        if mount.type == "volume" and source and source in project.volumes:
            volume = project.volumes[source]
            source = (
                volume.name
                if volume.external or volume.name != volume.key
                else (scoped(stack, source))
            )
        container.mounts.add(
            type=mount.type,
            source=source,
            target=mount.target,
            read_only=mount.read_only,
            tmpfs_size=mount.tmpfs_size,
        )
    health = service.healthcheck
    if health is not None:
        if health.disable:
            container.healthcheck.test.append("NONE")
        else:
            container.healthcheck.test.extend(health.test or ())
            container.healthcheck.interval = health.interval or 0
            container.healthcheck.timeout = health.timeout or 0
            container.healthcheck.retries = health.retries or 0
            container.healthcheck.start_period = health.start_period or 0
    for refs, table, files in (
        (service.secrets, container.secrets, project.secrets),
        (service.configs, container.configs, project.configs),
    ):
        for ref in refs:
            target = ref.target or ""
            table.add(
                name=file_name(stack, files[ref.source]),
                target=target,
                uid=int(ref.uid or 0),
                gid=int(ref.gid or 0),
                mode=ref.mode or 0,
            )
    resources = spec.task.resources
    for wanted, given in (
        (resources.limits, deploy.limits),
        (resources.reservations, deploy.reservations),
    ):
        wanted.nano_cpus, wanted.memory_bytes = given.nano_cpus, given.memory_bytes
    resources.limits.pids = deploy.limits.pids
    policy = deploy.restart_policy
    if policy is not None:
        restart = spec.task.restart
        restart.condition = CONDITIONS[policy.condition or "any"]  # type: ignore[assignment]
        if policy.delay is not None:
            restart.delay = policy.delay
        restart.max_attempts = policy.max_attempts or 0
        restart.window = policy.window or 0
    placement = spec.task.placement
    placement.constraints.extend(deploy.constraints)
    placement.preferences.extend(deploy.preferences)
    placement.max_replicas = deploy.max_replicas_per_node or 0
    for config, out in (
        (deploy.update_config, spec.update),
        (deploy.rollback_config, spec.rollback),
    ):
        if config is None:
            continue
        if config.parallelism is not None:
            out.parallelism = config.parallelism
        out.delay = config.delay or 0
        out.failure_action = FAILURE_ACTIONS[config.failure_action or "pause"]  # type: ignore[assignment]
        if config.monitor is not None:
            out.monitor = config.monitor
        out.max_failure_ratio = config.max_failure_ratio or 0
        out.order = 1 if config.order == "start-first" else 0  # type: ignore[assignment]
    for attachment in service.networks:
        network = project.networks[attachment.name]
        # As docker: the compose name of the service is an alias on its stack networks.
        aliases = [service.name, *(a for a in attachment.aliases if a != service.name)]
        spec.task.networks.add(target=network_name(stack, network), aliases=aliases)
    spec.endpoint.mode = deploy.endpoint_mode or ""
    for port in service.ports:
        spec.endpoint.ports.add(
            protocol=port.protocol,
            target_port=port.target,
            published_port=port.published or 0,
            publish_mode=port.mode,
        )
    spec.labels[HASH_LABEL] = spec_hash(spec)
    return spec


def spec_hash(spec: opb.ServiceSpec) -> str:
    """A digest of what the file asks for (the hash label itself left out)."""
    copy = type(spec)()
    copy.CopyFrom(spec)
    copy.labels.pop(HASH_LABEL, None)
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()[:16]


def deploy_order(services: Mapping[str, model.Service]) -> list[str]:
    """Services after the ones they depend on (cycles are refused by the normaliser)."""
    done: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for dependency in services[name].depends_on:
            visit(dependency.service)
        done.append(name)

    for name in sorted(services):
        visit(name)
    return done

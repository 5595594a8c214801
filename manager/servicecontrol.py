"""The control API's services, tasks, secrets and configs: validation and store writes.

What the user asks for is checked here, once, before anything is written: a bad spec
is refused with one line and nothing is stored. Who writes what after that (see
manager.orchestrator): this module creates, updates and deletes Service objects and
their secrets and configs; it never creates or changes tasks.

- A spec change that affects tasks (the task template or the endpoint) bumps the
  service's `spec_version`, which makes the orchestrator's updater replace tasks; a
  change of replicas alone does not (scaling is not an update). The spec before every
  change is kept in `previous_spec` for `service rollback`.
- Images: `image_resolver` (set by the daemon's wiring) turns the image a user named
  into the reference every node will pull, pinned by digest; the stored spec holds the
  pinned reference, as docker's client pins `image@sha256:...` at create time.
- Secrets' data is write-only: nothing here returns it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from api import objects_pb2 as objects
from api import swarm_pb2 as swarm
from api import tasks
from api.errors import Conflict, InvalidArgument, NotFound, SequenceConflict
from api.networks import ingress_ports
from manager import store as st
from manager.ids import new_id

MAX_SECRET_SIZE: Final = 500 * 1024
MAX_CONFIG_SIZE: Final = 1000 * 1024
_NAME: Final = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9_.-]{0,62})$")
_GLOBAL_MODES: Final = (objects.GLOBAL, objects.GLOBAL_JOB)
_JOB_MODES: Final = (objects.REPLICATED_JOB, objects.GLOBAL_JOB)
ImageResolver = Callable[[str], str]


# ---- validation ----------------------------------------------------------------------


def validate_name(kind: str, name: str) -> None:
    if not _NAME.match(name):
        raise InvalidArgument(
            f"invalid {kind} name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, "
            "up to 63 characters"
        )


def validate_spec(spec: objects.ServiceSpec) -> None:
    """Refuse a spec the pipeline could not honour, with docker's words where it has them."""
    from manager.scheduler.constraints import validate_placement

    validate_name("service", spec.name)
    container = spec.task.container
    if not container.image:
        raise InvalidArgument("ContainerSpec: image reference must be provided")
    if spec.mode in _GLOBAL_MODES and spec.replicas:
        raise InvalidArgument("replicas can only be used with replicated or replicated-job mode")
    if spec.mode == objects.REPLICATED_JOB and spec.max_concurrent > spec.replicas:
        raise InvalidArgument("max-concurrent cannot be greater than the number of replicas")
    validate_placement(spec.task.placement)
    resources = spec.task.resources
    for what, value in (
        ("limit-cpu", resources.limits.nano_cpus),
        ("limit-memory", resources.limits.memory_bytes),
        ("limit-pids", resources.limits.pids),
        ("reserve-cpu", resources.reservations.nano_cpus),
        ("reserve-memory", resources.reservations.memory_bytes),
    ):
        if value < 0:
            raise InvalidArgument(f"invalid {what}: must not be negative")
    grace = container.stop_grace_period if container.HasField("stop_grace_period") else 0
    if grace < 0:
        raise InvalidArgument("stop-grace-period must not be negative")
    for config in (spec.update, spec.rollback):
        if not 0 <= config.max_failure_ratio <= 1:
            raise InvalidArgument("max-failure-ratio must be between 0 and 1")
    seen: set[str] = set()
    for ref in container.secrets:
        target = ref.target or ref.name
        if "/" in target or target in ("", ".", ".."):
            raise InvalidArgument(f"invalid secret target {target!r}: a file name is required")
        if target in seen:
            raise InvalidArgument(f"secret target {target} is used more than once")
        seen.add(target)
    for ref in container.configs:
        if ref.target and not ref.target.startswith("/"):
            raise InvalidArgument(f"invalid config target {ref.target!r}: an absolute path")
    for port in spec.endpoint.ports:
        if not 0 < port.target_port < 65536 or port.published_port > 65535:
            raise InvalidArgument(f"invalid port {port.published_port}:{port.target_port}")
        if port.protocol not in ("", "tcp", "udp"):
            raise InvalidArgument(f"invalid protocol {port.protocol!r} (tcp or udp)")
        if port.publish_mode not in ("", "ingress", "host"):
            raise InvalidArgument(f"invalid publish mode {port.publish_mode!r} (ingress or host)")


def _resolve_files(tx: st.ReadTx, spec: objects.ServiceSpec) -> None:
    """Fill in the ids of the secrets and configs the spec names (by id or name)."""
    container = spec.task.container
    for refs, table in ((container.secrets, st.SECRETS), (container.configs, st.CONFIGS)):
        for ref in refs:
            try:
                found = st.resolve_file(tx, table, ref.id or ref.name)
            except NotFound:
                raise InvalidArgument(f"{table.kind} not found: {ref.name or ref.id}") from None
            ref.id, ref.name = found.meta.id, found.spec.name
            if table is st.SECRETS and not ref.target:
                ref.target = ref.name
            if table is st.CONFIGS and not ref.target:
                ref.target = "/" + ref.name
            ref.mode = ref.mode or 0o444


_ALIAS: Final = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9_.-]{0,62})$")
DYNAMIC_PORTS: Final = range(30000, 32768)  # docker's range for ingress ports given no number


def _resolve_networks(tx: st.ReadTx, spec: objects.ServiceSpec) -> None:
    """Network names in the spec become ids; the ingress network is the mesh's own."""
    seen: set[str] = set()
    for attachment in spec.task.networks:
        try:
            network = st.resolve_network(tx, attachment.target)
        except NotFound:
            raise InvalidArgument(f"network {attachment.target} not found") from None
        if network.spec.ingress:
            raise InvalidArgument(
                "service cannot be explicitly attached to the ingress network "
                f"{network.spec.name!r}"
            )
        if network.meta.id in seen:
            raise InvalidArgument(f"network {network.spec.name} is attached more than once")
        seen.add(network.meta.id)
        for alias in attachment.aliases:
            if not _ALIAS.match(alias):
                raise InvalidArgument(
                    f"invalid alias {alias!r}: a DNS name of [a-zA-Z0-9_.-], up to 63 characters"
                )
        attachment.target = network.meta.id


def _allocate_ports(
    tx: st.ReadTx, service: objects.Service, *, old: objects.Service | None
) -> None:
    """The service's endpoint ports: its spec's, with ingress ports given a number
    (kept from before when the same target was published dynamically) and refused when
    another service already publishes the same port."""
    spec_ports = list(service.spec.endpoint.ports)
    if service.spec.endpoint.mode == "dnsrr" and ingress_ports(spec_ports):
        raise InvalidArgument("port published with ingress mode can't be used with dnsrr mode")
    taken: dict[tuple[str, int], str] = {}
    for other in st.find_services(tx):
        if other.meta.id == service.meta.id:
            continue
        for port in ingress_ports(other.endpoint.ports):
            taken[(port.protocol or "tcp", port.published_port)] = other.spec.name
    previous = {
        (p.protocol or "tcp", p.target_port): p.published_port
        for p in ingress_ports(old.endpoint.ports if old else ())
    }
    ports: list[objects.PortConfig] = []
    for spec_port in spec_ports:
        port = objects.PortConfig()
        port.CopyFrom(spec_port)
        port.protocol = port.protocol or "tcp"
        port.publish_mode = port.publish_mode or "ingress"
        if port.publish_mode == "ingress":
            key = (port.protocol, port.published_port)
            if port.published_port and key in taken:
                raise Conflict(
                    f"port '{port.published_port}' is already in use by service "
                    f"'{taken[key]}' as an ingress port"
                )
            if not port.published_port:
                used = {p for (proto, p) in taken if proto == port.protocol}
                used |= {
                    p.published_port for p in spec_ports if (p.protocol or "tcp") == port.protocol
                }
                used |= {p.published_port for p in ports if p.protocol == port.protocol}
                kept = previous.get((port.protocol, port.target_port), 0)
                free = (p for p in DYNAMIC_PORTS if p not in used)
                port.published_port = kept if kept and kept not in used else next(free, 0)
                if not port.published_port:
                    raise Conflict("no free port left in the dynamic range 30000-32767")
            taken[(port.protocol, port.published_port)] = service.spec.name
        ports.append(port)
    del service.endpoint.ports[:]
    service.endpoint.ports.extend(ports)


def _affects_tasks(old: objects.ServiceSpec, new: objects.ServiceSpec) -> bool:
    return old.task != new.task or old.endpoint != new.endpoint or old.mode != new.mode


# ---- services --------------------------------------------------------------------------


class Services:
    """Service, task, secret and config operations over one manager's store."""

    def __init__(self, store: st.MemoryStore, *, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock
        self.image_resolver: ImageResolver | None = None

    def _pin(self, spec: objects.ServiceSpec, *, previous: str = "") -> None:
        image = spec.task.container.image
        if image != previous and self.image_resolver is not None:
            spec.task.container.image = self.image_resolver(image)

    def create_service(self, spec: objects.ServiceSpec) -> objects.Service:
        spec = _copy(spec)
        validate_spec(spec)
        self._pin(spec)
        service = objects.Service(spec=spec, spec_version=1)
        service.meta.id = new_id()
        service.endpoint.spec.CopyFrom(spec.endpoint)

        def create(tx: st.Tx) -> None:
            _resolve_files(tx, service.spec)
            _resolve_networks(tx, service.spec)
            _allocate_ports(tx, service, old=None)
            st.create_service(tx, service)

        self.store.update(create)
        return self.get_service(service.meta.id)

    def get_service(self, ref: str) -> objects.Service:
        return self.store.view(lambda tx: st.resolve_service(tx, ref))

    def update_service(self, request: swarm.UpdateServiceRequest) -> objects.Service:
        current = self.get_service(request.service_id)
        spec = _copy(request.spec)
        if not request.rollback:
            validate_spec(spec)
            self._pin(spec, previous=current.spec.task.container.image)
        now = self.clock()

        def update(tx: st.Tx) -> str:
            service = st.get_service(tx, current.meta.id)
            if service is None:
                raise NotFound(f"service {request.service_id} not found")
            if service.meta.version != request.version:
                raise SequenceConflict("update out of sequence")
            old = objects.Service()
            old.CopyFrom(service)
            if request.rollback:
                _rollback(service, now=now)
            else:
                _resolve_files(tx, spec)
                _resolve_networks(tx, spec)
                _change(service, spec, now=now)
            _allocate_ports(tx, service, old=old)
            st.update_service(tx, service)
            return service.meta.id

        return self.get_service(self.store.update(update))

    def remove_service(self, ref: str) -> None:
        def remove(tx: st.Tx) -> None:
            st.delete_service(tx, st.resolve_service(tx, ref).meta.id)

        self.store.update(remove)

    def list_services(self) -> list[swarm.ServiceInfo]:
        def read(tx: st.ReadTx) -> list[swarm.ServiceInfo]:
            return [_info(tx, s) for s in st.find_services(tx)]

        return self.store.view(read)

    def list_tasks(self, request: swarm.ListTasksRequest) -> list[objects.Task]:
        """The tasks asked for: the store's own objects, read-only (copied into the reply)."""

        def read(tx: st.ReadTx) -> list[objects.Task]:
            found: dict[str, objects.Task] = {}
            for ref in request.services:
                service = st.resolve_service(tx, ref)
                found.update(
                    (t.meta.id, t)
                    for t in st.find_tasks(tx, by=st.ByService(service.meta.id), copy=False)
                )
            for ref in request.nodes:
                node = st.resolve_node(tx, ref)
                found.update(
                    (t.meta.id, t)
                    for t in st.find_tasks(tx, by=st.ByNode(node.meta.id), copy=False)
                )
            for ref in request.task_ids:
                task = st.resolve_task(tx, ref)
                found[task.meta.id] = task
            if not (request.services or request.nodes or request.task_ids):
                found = {t.meta.id: t for t in st.find_tasks(tx, copy=False)}
            wanted = set(request.desired_states)
            return [t for t in found.values() if not wanted or t.desired_state in wanted]

        return self.store.view(read)

    def get_task(self, ref: str) -> objects.Task:
        return self.store.view(lambda tx: st.resolve_task(tx, ref))

    # ---- secrets and configs -------------------------------------------------------

    def create_secret(self, spec: objects.SecretSpec) -> objects.Secret:
        secret = objects.Secret(spec=spec)
        self._create_file(secret, limit=MAX_SECRET_SIZE)
        return self.get_secret(secret.meta.id)

    def create_config(self, spec: objects.SecretSpec) -> objects.Config:
        config = objects.Config(spec=spec)
        self._create_file(config, limit=MAX_CONFIG_SIZE)
        return self.get_config(config.meta.id)

    def _create_file(self, obj: objects.Secret | objects.Config, *, limit: int) -> None:
        kind = "secret" if isinstance(obj, objects.Secret) else "config"
        validate_name(kind, obj.spec.name)
        size = len(obj.spec.data)
        if not 0 < size <= limit:
            raise InvalidArgument(
                f"{kind} data must be larger than 0 and less than {limit // 1024} KB "
                f"(got {size} bytes)"
            )
        obj.meta.id = new_id()
        self.store.update(lambda tx: st.create_file(tx, obj))

    def get_secret(self, ref: str) -> objects.Secret:
        return redact(self.store.view(lambda tx: st.resolve_file(tx, st.SECRETS, ref)))

    def get_config(self, ref: str) -> objects.Config:
        config: objects.Config = self.store.view(lambda tx: st.resolve_file(tx, st.CONFIGS, ref))
        return config

    def list_secrets(self) -> list[objects.Secret]:
        return [redact(s) for s in self.store.view(lambda tx: st.find_secrets(tx))]

    def list_configs(self) -> list[objects.Config]:
        return self.store.view(lambda tx: st.find_configs(tx))

    def remove_secret(self, ref: str) -> None:
        self._remove_file(st.SECRETS, ref)

    def remove_config(self, ref: str) -> None:
        self._remove_file(st.CONFIGS, ref)

    def _remove_file(
        self, table: st.Table[objects.Secret] | st.Table[objects.Config], ref: str
    ) -> None:
        def remove(tx: st.Tx) -> None:
            obj = st.resolve_file(tx, table, ref)
            users = st.find_services(tx, by=st.ByReferencedFile(obj.meta.id))
            if users:
                names = ", ".join(s.spec.name for s in users)
                plural = "service" if len(users) == 1 else "services"
                raise Conflict(
                    f"{table.kind} '{obj.spec.name}' is in use by the following {plural}: {names}"
                )
            st.delete_file(tx, table, obj.meta.id)

        self.store.update(remove)


def _change(service: objects.Service, spec: objects.ServiceSpec, *, now: float) -> None:
    """A user's update: keep the old spec for rollback; replace tasks only when needed."""
    old = service.spec
    affects = _affects_tasks(old, spec)
    service.previous_spec.CopyFrom(old)
    service.spec.CopyFrom(spec)
    service.endpoint.spec.CopyFrom(spec.endpoint)
    if not affects:
        return
    service.spec_version += 1
    if spec.mode in _JOB_MODES:
        service.job_iteration += 1  # a job updated (or forced) runs again
    service.update_status.CopyFrom(
        objects.UpdateStatus(
            state=objects.UpdateStatus.UPDATING, started_at=now, message="update in progress"
        )
    )


def _rollback(service: objects.Service, *, now: float) -> None:
    if not service.HasField("previous_spec"):
        raise InvalidArgument(f"service {service.spec.name} does not have a previous spec")
    current = _copy(service.spec)
    service.spec.CopyFrom(service.previous_spec)
    service.previous_spec.CopyFrom(current)
    service.endpoint.spec.CopyFrom(service.spec.endpoint)
    service.spec_version += 1
    service.update_status.CopyFrom(
        objects.UpdateStatus(
            state=objects.UpdateStatus.ROLLBACK_STARTED,
            started_at=now,
            message="manually requested rollback",
        )
    )


def _info(tx: st.ReadTx, service: objects.Service) -> swarm.ServiceInfo:
    """A service with docker's REPLICAS figures: running/desired (and completed jobs)."""
    running = desired_global = completed = 0
    for task in st.find_tasks(tx, by=st.ByService(service.meta.id), copy=False):
        if task.job_iteration != service.job_iteration:
            continue
        if task.status.state == objects.TASK_COMPLETE:
            completed += 1
        live = task.desired_state <= objects.TASK_RUNNING or (
            task.desired_state == objects.TASK_COMPLETE and not tasks.is_terminal(task.status.state)
        )
        if live:
            desired_global += 1
            running += task.status.state == objects.TASK_RUNNING
    mode = service.spec.mode
    desired = desired_global if mode in _GLOBAL_MODES else service.spec.replicas
    return swarm.ServiceInfo(service=service, running=running, desired=desired, completed=completed)


def redact(secret: objects.Secret) -> objects.Secret:
    secret.spec.data = b""
    return secret


def _copy(spec: objects.ServiceSpec) -> objects.ServiceSpec:
    out = objects.ServiceSpec()
    out.CopyFrom(spec)
    return out

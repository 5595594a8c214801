"""The normalised compose project: plain, frozen dataclasses, no protos.

`cli.compose.normalize.normalize` turns the loader's merged, interpolated document into a
`Project`; every value here is already validated and in one canonical form (durations in
seconds, sizes in bytes, CPUs in nano CPUs, paths absolute, short syntax expanded), so the
deploy side never looks at compose syntax again. Every field has a default so tests and
callers can build partial specs. Names are the file's keys, not yet prefixed with the stack
name: that is the deployer's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Port:
    target: int = 0
    published: int | None = None
    protocol: str = "tcp"  # tcp | udp
    mode: str = "ingress"  # ingress | host


@dataclass(frozen=True)
class ServiceNetwork:
    name: str = "default"
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class FileRef:
    """A service's use of a secret or config; `source` is the top-level key."""

    source: str = ""
    target: str = ""
    uid: str | None = None
    gid: str | None = None
    mode: int | None = None


@dataclass(frozen=True)
class Mount:
    type: str = "volume"  # volume | bind | tmpfs
    source: str = ""  # volume key, absolute host path, or "" (anonymous volume / tmpfs)
    target: str = ""
    read_only: bool = False
    tmpfs_size: int = 0


@dataclass(frozen=True)
class Healthcheck:
    test: tuple[str, ...] | None = None
    interval: float | None = None
    timeout: float | None = None
    start_period: float | None = None
    retries: int | None = None
    disable: bool = False


@dataclass(frozen=True)
class Resources:
    nano_cpus: int = 0
    memory_bytes: int = 0
    pids: int = 0


@dataclass(frozen=True)
class RestartPolicy:
    condition: str = "any"  # none | on-failure | any
    delay: float | None = None
    max_attempts: int | None = None
    window: float | None = None


@dataclass(frozen=True)
class UpdateConfig:
    parallelism: int = 1
    delay: float = 0.0
    failure_action: str = "pause"  # pause | continue | rollback
    monitor: float | None = None
    max_failure_ratio: float = 0.0
    order: str = "stop-first"  # stop-first | start-first


@dataclass(frozen=True)
class Deploy:
    mode: str = "replicated"  # replicated | global | replicated-job | global-job
    replicas: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    endpoint_mode: str | None = None  # vip | dnsrr
    constraints: tuple[str, ...] = ()
    preferences: tuple[str, ...] = ()  # spread descriptors, e.g. "node.labels.zone"
    max_replicas_per_node: int | None = None
    limits: Resources = field(default_factory=Resources)
    reservations: Resources = field(default_factory=Resources)
    restart_policy: RestartPolicy | None = None
    update_config: UpdateConfig | None = None
    rollback_config: UpdateConfig | None = None


@dataclass(frozen=True)
class Build:
    context: Path = Path("/")
    dockerfile: str = "Dockerfile"
    args: dict[str, str] = field(default_factory=dict)
    target: str = ""


@dataclass(frozen=True)
class DependsOn:
    service: str = ""
    condition: str = "service_started"
    # service_started | service_healthy | service_completed_successfully


@dataclass(frozen=True)
class Service:
    name: str = ""
    image: str | None = None
    build: Build | None = None
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    environment: dict[str, str] = field(default_factory=dict)
    ports: tuple[Port, ...] = ()
    volumes: tuple[Mount, ...] = ()
    networks: tuple[ServiceNetwork, ...] = (ServiceNetwork("default"),)
    secrets: tuple[FileRef, ...] = ()
    configs: tuple[FileRef, ...] = ()
    healthcheck: Healthcheck | None = None
    hostname: str | None = None
    user: str | None = None
    working_dir: str | None = None
    read_only: bool = False
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    stop_grace_period: float | None = None
    stop_signal: str | None = None
    init: bool | None = None
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    extra_hosts: tuple[str, ...] = ()  # "NAME:IP"
    ulimits: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (soft, hard)
    sysctls: dict[str, str] = field(default_factory=dict)
    depends_on: tuple[DependsOn, ...] = ()
    deploy: Deploy = field(default_factory=Deploy)


@dataclass(frozen=True)
class Network:
    key: str = "default"
    name: str = "default"
    external: bool = False
    driver: str = "overlay"
    attachable: bool = False
    internal: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    subnets: tuple[tuple[str, str | None, str | None], ...] = ()  # (subnet, gateway, ip_range)
    driver_opts: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Volume:
    key: str = ""
    name: str = ""
    external: bool = False
    driver: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    driver_opts: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FileSpec:
    """A top-level secret or config: exactly one of file, environment, content, external."""

    key: str = ""
    name: str = ""
    external: bool = False
    file: Path | None = None
    environment: str | None = None
    content: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Project:
    services: dict[str, Service] = field(default_factory=dict)
    networks: dict[str, Network] = field(default_factory=dict)
    volumes: dict[str, Volume] = field(default_factory=dict)
    secrets: dict[str, FileSpec] = field(default_factory=dict)
    configs: dict[str, FileSpec] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def plain(value: Any) -> Any:
    """A model value as plain YAML/JSON data (dicts, lists, strings, numbers, bools)."""
    if hasattr(value, "__dataclass_fields__"):
        return {name: plain(getattr(value, name)) for name in value.__dataclass_fields__}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value

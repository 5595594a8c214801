"""Compose document -> typed, validated `Project` (see `cli.compose.model`).

The loader (`cli.compose.load`) has already parsed, merged and interpolated the files; here
each key is checked against the Compose Spec and turned into one canonical form: short and
long syntax for ports, volumes, networks, secrets and configs collapse into the same
dataclasses; durations become seconds, sizes bytes, CPUs nano CPUs, relative paths absolute
(and may not climb out of the project directory with `..`).

Three kinds of key:
- supported: normalised;
- in the spec but meaningless for a swarm service (container_name, links, restart, ...):
  collected over the whole project into one `Ignoring unsupported options: a, b` warning,
  as `docker stack deploy` prints;
- anything else (or a wrong type): `ComposeError("<file>:<line>: <key.path>: <message>")`,
  the line being that of the nearest key the loader knows the position of.

Since interpolation yields strings, scalars are accepted in their string spelling too
("true", "3", "0.5"), as compose does. `dump` renders a `Project` as deterministic YAML for
`pyswarm stack config`.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from cli import parse
from cli.compose.load import ComposeError, Loaded, parse_dotenv
from cli.compose.model import (
    Build,
    DependsOn,
    Deploy,
    FileRef,
    FileSpec,
    Healthcheck,
    Mount,
    Network,
    Port,
    Project,
    Resources,
    RestartPolicy,
    Service,
    ServiceNetwork,
    UpdateConfig,
    Volume,
    plain,
)

T = TypeVar("T")
KeyPath = tuple[str | int, ...]

SERVICE_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")

TOP_LEVEL = {"version", "name", "services", "networks", "volumes", "secrets", "configs"}
TOP_LEVEL_IGNORED = {"include", "models"}  # handled by the loader / not for swarm

SERVICE_KEYS = {
    "image", "build", "command", "entrypoint", "environment", "env_file", "ports", "volumes",
    "tmpfs", "networks", "secrets", "configs", "healthcheck", "hostname", "user",
    "working_dir", "read_only", "cap_add", "cap_drop", "labels", "stop_grace_period",
    "stop_signal", "init", "dns", "dns_search", "extra_hosts", "ulimits", "sysctls",
    "depends_on", "deploy",
}  # fmt: skip
# In the Compose Spec, but a swarm service cannot honour them: warned about, then dropped.
SERVICE_UNSUPPORTED = {
    "annotations", "attach", "blkio_config", "cgroup", "cgroup_parent", "container_name",
    "cpu_count", "cpu_percent", "cpu_period", "cpu_quota", "cpu_rt_period", "cpu_rt_runtime",
    "cpu_shares", "cpus", "cpuset", "credential_spec", "develop", "device_cgroup_rules",
    "devices", "dns_opt", "domainname", "expose", "external_links", "extends", "gpus",
    "group_add", "ipc", "isolation", "label_file", "links", "logging", "mac_address",
    "mem_limit", "mem_reservation", "mem_swappiness", "memswap_limit", "models",
    "network_mode", "oom_kill_disable", "oom_score_adj", "pid", "pids_limit", "platform",
    "post_start", "pre_stop", "privileged", "profiles", "provider", "pull_policy",
    "restart", "runtime", "scale", "security_opt", "shm_size", "stdin_open", "storage_opt",
    "tty", "use_api_socket", "userns_mode", "uts", "volumes_from",
}  # fmt: skip
BUILD_KEYS = {"context", "dockerfile", "args", "target"}
BUILD_UNSUPPORTED = {
    "additional_contexts", "cache_from", "cache_to", "dockerfile_inline", "entitlements",
    "extra_hosts", "isolation", "labels", "network", "no_cache", "platforms", "privileged",
    "pull", "secrets", "shm_size", "ssh", "tags", "ulimits",
}  # fmt: skip
DEPLOY_KEYS = {
    "mode", "replicas", "labels", "endpoint_mode", "placement", "resources",
    "restart_policy", "update_config", "rollback_config",
}  # fmt: skip
UPDATE_KEYS = {"parallelism", "delay", "failure_action", "monitor", "max_failure_ratio", "order"}

DEPLOY_MODES = ("replicated", "global", "replicated-job", "global-job")
DEPENDS_CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")
RESTART_CONDITIONS = ("none", "on-failure", "any")
ENDPOINT_MODES = ("vip", "dnsrr")
ORDERS = ("stop-first", "start-first")
VOLUME_MODES = {"ro", "rw", "z", "Z", "nocopy", "cached", "delegated", "consistent"}
VOLUME_MODES |= {"shared", "slave", "private", "rshared", "rslave", "rprivate"}

_PORT_RE = re.compile(
    r"(?:(?P<ip>\[[0-9a-fA-F:.]+\]|[0-9.]+|[0-9a-fA-F:]*:[0-9a-fA-F:]*):)??"
    r"(?:(?P<published>[0-9]+(?:-[0-9]+)?)?:)?"
    r"(?P<target>[0-9]+(?:-[0-9]+)?)(?:/(?P<protocol>[a-z]+))?"
)


class _Normalizer:
    def __init__(self, loaded: Loaded) -> None:
        self.loaded = loaded
        self.base_dir = Path(os.path.normpath(loaded.base_dir))
        self.warnings: list[str] = list(loaded.warnings)
        self.unsupported: set[str] = set()

    # ---- errors and scalar types -------------------------------------------------

    def error(self, path: KeyPath, message: str) -> ComposeError:
        """`<file>:<line>: <key.path>: <message>`, at the nearest key with a known position."""
        positions = self.loaded.positions
        for n in range(len(path), -1, -1):
            pos = positions.get(tuple(path[:n]))
            if pos is not None:
                return ComposeError(message, file=pos.file, line=pos.line, path=path)
        return ComposeError(message, path=path)

    def mapping(self, value: Any, path: KeyPath) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(path, f"must be a mapping, not {_kind(value)}")
        return value

    def sequence(self, value: Any, path: KeyPath) -> list[Any]:
        if not isinstance(value, list):
            raise self.error(path, f"must be a list, not {_kind(value)}")
        return value

    def string(self, value: Any, path: KeyPath, *, scalar: bool = False) -> str:
        """A string; with `scalar`, numbers are accepted and spelled as YAML would."""
        if isinstance(value, str):
            return value
        if scalar and isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise self.error(path, f"must be a string, not {_kind(value)}")

    def boolean(self, value: Any, path: KeyPath) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise self.error(path, f"must be a boolean, not {_kind(value)}")

    def integer(self, value: Any, path: KeyPath, *, minimum: int | None = 0) -> int:
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value.strip()):
            number = int(value)
        if number is None:
            raise self.error(path, f"must be an integer, not {_kind(value)}")
        if minimum is not None and number < minimum:
            raise self.error(path, f"must be at least {minimum}, not {number}")
        return number

    def number(self, value: Any, path: KeyPath) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise self.error(path, f"must be a number, not {_kind(value)}")

    def duration(self, value: Any, path: KeyPath) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str):
            try:
                seconds = parse.parse_duration(value.strip())
            except ValueError:
                raise self.error(path, f"invalid duration '{value}'") from None
        else:
            raise self.error(path, f"must be a duration, not {_kind(value)}")
        if seconds < 0:
            raise self.error(path, f"invalid duration '{value}'")
        return seconds

    def size(self, value: Any, path: KeyPath) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        if isinstance(value, str):
            try:
                return parse.parse_memory(value.strip())
            except ValueError:
                pass
        raise self.error(path, f"invalid size '{value}'")

    def cpus(self, value: Any, path: KeyPath) -> int:
        if isinstance(value, int | float | str) and not isinstance(value, bool):
            try:
                return parse.parse_cpus(str(value).strip())
            except ValueError:
                pass
        raise self.error(path, f"invalid cpus '{value}'")

    def choice(self, value: Any, path: KeyPath, choices: Iterable[str]) -> str:
        text = self.string(value, path)
        options = tuple(choices)
        if text not in options:
            raise self.error(path, f"invalid value '{text}' (one of: {', '.join(options)})")
        return text

    def strings(self, value: Any, path: KeyPath, *, single: bool = True) -> tuple[str, ...]:
        """A list of strings, or (with `single`) one string standing for a list of one."""
        if single and isinstance(value, str):
            return (value,)
        items = self.sequence(value, path)
        return tuple(self.string(v, (*path, i), scalar=True) for i, v in enumerate(items))

    def command(self, value: Any, path: KeyPath) -> tuple[str, ...] | None:
        if value is None:
            return None
        if isinstance(value, str):
            try:
                return tuple(shlex.split(value))
            except ValueError as e:
                raise self.error(path, f"invalid command line: {e}") from None
        return self.strings(value, path, single=False)

    def dict_or_list(self, value: Any, path: KeyPath, sep: str = "=") -> dict[str, str | None]:
        """`{k: v}` or `["k=v", "k"]` (labels, args, sysctls, environment); None for no value."""
        result: dict[str, str | None] = {}
        if isinstance(value, dict):
            for key, item in value.items():
                key_path = (*path, key)
                if item is None:
                    result[key] = None
                elif isinstance(item, bool):
                    result[key] = "true" if item else "false"
                else:
                    result[key] = self.string(item, key_path, scalar=True)
            return result
        for i, item in enumerate(self.sequence(value, path)):
            text = self.string(item, (*path, i), scalar=True)
            key, found, val = text.partition(sep)
            if not key.strip():
                raise self.error((*path, i), f"invalid entry '{text}'")
            result[key] = val if found else None
        return result

    def labels(self, value: Any, path: KeyPath) -> dict[str, str]:
        return {k: v or "" for k, v in self.dict_or_list(value, path).items()}

    def keys(
        self,
        mapping: dict[str, Any],
        path: KeyPath,
        known: set[str],
        unsupported: Collection[str] = (),
        prefix: str = "",
    ) -> None:
        """Refuse keys outside the spec; note spec keys that swarm cannot honour."""
        for key in mapping:
            if not isinstance(key, str):
                raise self.error(path, f"invalid key {key!r}")
            if key.startswith("x-") or key in known:
                continue
            if key in unsupported:
                self.unsupported.add(prefix + key)
                continue
            raise self.error((*path, key), "unknown key")

    def local_path(self, value: Any, path: KeyPath) -> Path:
        """A path the user wrote: absolute as written, else under the project directory."""
        text = self.string(value, path)
        if not text:
            raise self.error(path, "empty path")
        if text.startswith("~"):
            home = self.loaded.environ.get("HOME", "")
            if not home:
                raise self.error(path, f"cannot expand '{text}': HOME is not set")
            text = home + text[1:]
        if os.path.isabs(text):
            return Path(os.path.normpath(text))
        resolved = Path(os.path.normpath(self.base_dir / text))
        if resolved != self.base_dir and self.base_dir not in resolved.parents:
            raise self.error(path, f"'{text}' escapes the project directory")
        return resolved

    # ---- the project ---------------------------------------------------------------

    def project(self) -> Project:
        data = self.loaded.data
        if not isinstance(data, dict):
            raise self.error((), "the compose file must be a mapping")
        self.keys(data, (), TOP_LEVEL | TOP_LEVEL_IGNORED)
        raw_services = self.mapping(data.get("services") or {}, ("services",))
        networks = self.top_level(data, "networks", self.network)
        volumes = self.top_level(data, "volumes", self.volume)
        secrets = self.top_level(data, "secrets", self.file_spec)
        configs = self.top_level(data, "configs", self.file_spec)
        services: dict[str, Service] = {}
        for name, raw in raw_services.items():
            services[name] = self.service(name, raw, networks, volumes, secrets, configs)
        self.check_depends_on(services)
        if "default" not in networks and any(
            n.name == "default" for s in services.values() for n in s.networks
        ):
            networks["default"] = Network(key="default", name="default")
        warnings = list(self.warnings)
        if self.unsupported:
            warnings.append("Ignoring unsupported options: " + ", ".join(sorted(self.unsupported)))
        return Project(
            services=dict(sorted(services.items())),
            networks=dict(sorted(networks.items())),
            volumes=dict(sorted(volumes.items())),
            secrets=dict(sorted(secrets.items())),
            configs=dict(sorted(configs.items())),
            warnings=tuple(warnings),
        )

    def top_level(
        self, data: dict[str, Any], section: str, build: Callable[[str, Any, KeyPath], T]
    ) -> dict[str, T]:
        raw = data.get(section)
        if raw is None:
            return {}
        result: dict[str, T] = {}
        for key, value in self.mapping(raw, (section,)).items():
            if not isinstance(key, str):
                raise self.error((section,), f"invalid name {key!r}")
            if key.startswith("x-"):
                continue
            result[key] = build(key, value, (section, key))
        return result

    def network(self, key: str, value: Any, path: KeyPath) -> Network:
        raw = self.mapping(value if value is not None else {}, path)
        self.keys(
            raw,
            path,
            {"name", "driver", "driver_opts", "attachable", "internal", "labels", "ipam"}
            | {"external"},
            {"enable_ipv4", "enable_ipv6"},
            "networks.",
        )
        external, name = self.external(raw, key, path)
        if external and set(raw) & {"driver", "driver_opts", "ipam", "internal", "attachable"}:
            raise self.error(path, "an external network cannot have other settings than name")
        subnets: list[tuple[str, str | None, str | None]] = []
        if "ipam" in raw:
            ipam = self.mapping(raw["ipam"], (*path, "ipam"))
            self.keys(ipam, (*path, "ipam"), {"driver", "config", "options"})
            if ipam.get("driver") not in (None, "default"):
                raise self.error((*path, "ipam", "driver"), "only the default IPAM is supported")
            configs = self.sequence(ipam.get("config") or [], (*path, "ipam", "config"))
            for i, item in enumerate(configs):
                at = (*path, "ipam", "config", i)
                entry = self.mapping(item, at)
                self.keys(entry, at, {"subnet", "gateway", "ip_range", "aux_addresses"})
                if "subnet" not in entry:
                    raise self.error(at, "subnet is required")
                subnets.append(
                    (
                        self.string(entry["subnet"], (*at, "subnet")),
                        self.opt_string(entry, "gateway", at),
                        self.opt_string(entry, "ip_range", at),
                    )
                )
        return Network(
            key=key,
            name=name,
            external=external,
            driver=self.opt_string(raw, "driver", path) or "overlay",
            attachable=self.boolean(raw.get("attachable", False), (*path, "attachable")),
            internal=self.boolean(raw.get("internal", False), (*path, "internal")),
            labels=self.labels(raw.get("labels") or {}, (*path, "labels")),
            subnets=tuple(subnets),
            driver_opts=self.labels(raw.get("driver_opts") or {}, (*path, "driver_opts")),
        )

    def volume(self, key: str, value: Any, path: KeyPath) -> Volume:
        raw = self.mapping(value if value is not None else {}, path)
        self.keys(raw, path, {"name", "driver", "driver_opts", "labels", "external"})
        external, name = self.external(raw, key, path)
        if external and set(raw) & {"driver", "driver_opts"}:
            raise self.error(path, "an external volume cannot have other settings than name")
        return Volume(
            key=key,
            name=name,
            external=external,
            driver=self.opt_string(raw, "driver", path),
            labels=self.labels(raw.get("labels") or {}, (*path, "labels")),
            driver_opts=self.labels(raw.get("driver_opts") or {}, (*path, "driver_opts")),
        )

    def file_spec(self, key: str, value: Any, path: KeyPath) -> FileSpec:
        raw = self.mapping(value, path)
        kind = str(path[0])
        known = {"name", "file", "environment", "external", "labels"}
        if kind == "configs":
            known.add("content")
        self.keys(raw, path, known, {"driver", "driver_opts", "template_driver"}, f"{kind}.")
        external, name = self.external(raw, key, path)
        sources = [k for k in ("file", "environment", "content") if k in raw] + (
            ["external"] if external else []
        )
        if len(sources) != 1:
            wanted = (
                "file, environment, content or external"
                if kind == "configs"
                else ("file, environment or external")
            )
            raise self.error(path, f"exactly one of {wanted} is required")
        return FileSpec(
            key=key,
            name=name,
            external=external,
            file=self.local_path(raw["file"], (*path, "file")) if "file" in raw else None,
            environment=self.opt_string(raw, "environment", path),
            content=self.opt_string(raw, "content", path),
            labels=self.labels(raw.get("labels") or {}, (*path, "labels")),
        )

    def external(self, raw: dict[str, Any], key: str, path: KeyPath) -> tuple[bool, str]:
        """`external: true` or the legacy `external: {name: x}`; and the object's name."""
        name = self.opt_string(raw, "name", path)
        ext = raw.get("external", False)
        if isinstance(ext, dict):
            self.keys(ext, (*path, "external"), {"name"})
            legacy = self.opt_string(ext, "name", (*path, "external"))
            if legacy and name and legacy != name:
                raise self.error((*path, "external"), "conflicting names")
            return True, name or legacy or key
        return self.boolean(ext, (*path, "external")), name or key

    def opt_string(self, raw: dict[str, Any], key: str, path: KeyPath) -> str | None:
        value = raw.get(key)
        return None if value is None else self.string(value, (*path, key), scalar=True)

    # ---- services ------------------------------------------------------------------

    def service(
        self,
        name: str,
        value: Any,
        networks: dict[str, Network],
        volumes: dict[str, Volume],
        secrets: dict[str, FileSpec],
        configs: dict[str, FileSpec],
    ) -> Service:
        path: KeyPath = ("services", name)
        if not isinstance(name, str) or not SERVICE_NAME.fullmatch(name):
            raise self.error(
                path, f"invalid service name '{name}' (must match [a-zA-Z0-9][a-zA-Z0-9_.-]*)"
            )
        raw = self.mapping(value if value is not None else {}, path)
        self.keys(raw, path, SERVICE_KEYS, SERVICE_UNSUPPORTED)
        build = self.build(raw["build"], (*path, "build")) if "build" in raw else None
        image = self.opt_string(raw, "image", path)
        if image is None and build is None:
            raise self.error(path, "image or build is required")
        mounts = [
            self.mount(v, (*path, "volumes", i), volumes)
            for i, v in enumerate(self.sequence(raw.get("volumes") or [], (*path, "volumes")))
        ]
        if raw.get("tmpfs") is not None:
            for i, target in enumerate(self.strings(raw["tmpfs"], (*path, "tmpfs"))):
                mounts.append(self.tmpfs(target, (*path, "tmpfs", i)))

        def opt(key: str, convert: Callable[[Any, KeyPath], T]) -> T | None:
            return None if raw.get(key) is None else convert(raw[key], (*path, key))

        return Service(
            name=name,
            image=image,
            build=build,
            command=self.command(raw.get("command"), (*path, "command")),
            entrypoint=self.command(raw.get("entrypoint"), (*path, "entrypoint")),
            environment=self.environment(raw, path),
            ports=self.service_ports(raw.get("ports"), (*path, "ports")),
            volumes=tuple(mounts),
            networks=self.service_networks(raw.get("networks"), (*path, "networks"), networks),
            secrets=self.file_refs(raw.get("secrets"), (*path, "secrets"), secrets),
            configs=self.file_refs(raw.get("configs"), (*path, "configs"), configs),
            healthcheck=opt("healthcheck", self.healthcheck),
            hostname=self.opt_string(raw, "hostname", path),
            user=self.opt_string(raw, "user", path),
            working_dir=self.opt_string(raw, "working_dir", path),
            read_only=self.boolean(raw.get("read_only", False), (*path, "read_only")),
            cap_add=self.strings(raw.get("cap_add") or [], (*path, "cap_add"), single=False),
            cap_drop=self.strings(raw.get("cap_drop") or [], (*path, "cap_drop"), single=False),
            labels=self.labels(raw.get("labels") or {}, (*path, "labels")),
            stop_grace_period=opt("stop_grace_period", self.duration),
            stop_signal=self.opt_string(raw, "stop_signal", path),
            init=opt("init", self.boolean),
            dns=self.strings(raw.get("dns") or [], (*path, "dns")),
            dns_search=self.strings(raw.get("dns_search") or [], (*path, "dns_search")),
            extra_hosts=self.extra_hosts(raw.get("extra_hosts") or [], (*path, "extra_hosts")),
            ulimits=self.ulimits(raw.get("ulimits") or {}, (*path, "ulimits")),
            sysctls=self.labels(raw.get("sysctls") or {}, (*path, "sysctls")),
            depends_on=self.depends_on(raw.get("depends_on") or [], (*path, "depends_on")),
            deploy=self.deploy(raw.get("deploy") or {}, (*path, "deploy")),
        )

    def build(self, value: Any, path: KeyPath) -> Build:
        raw = {"context": value} if isinstance(value, str) else self.mapping(value, path)
        self.keys(raw, path, BUILD_KEYS, BUILD_UNSUPPORTED, "build.")
        context_path = path if isinstance(value, str) else (*path, "context")
        context_text = self.string(raw.get("context", "."), context_path)
        if "://" in context_text or context_text.startswith("git@"):
            raise self.error(context_path, "remote build contexts are not supported")
        args = self.dict_or_list(raw.get("args") or {}, (*path, "args"))
        return Build(
            context=self.local_path(context_text, context_path),
            dockerfile=self.opt_string(raw, "dockerfile", path) or "Dockerfile",
            args={
                k: v if v is not None else self.loaded.environ.get(k, "") for k, v in args.items()
            },
            target=self.opt_string(raw, "target", path) or "",
        )

    def environment(self, raw: dict[str, Any], path: KeyPath) -> dict[str, str]:
        values: dict[str, str | None] = {}
        if raw.get("env_file") is not None:
            at = (*path, "env_file")
            entries = raw["env_file"]
            for i, entry in enumerate(
                [entries] if isinstance(entries, str) else self.sequence(entries, at)
            ):
                required = True
                if isinstance(entry, dict):
                    self.keys(entry, (*at, i), {"path", "required", "format"})
                    required = self.boolean(entry.get("required", True), (*at, i, "required"))
                    if "path" not in entry:
                        raise self.error((*at, i), "path is required")
                    entry = entry["path"]
                item_path = at if isinstance(entries, str) else (*at, i)
                values.update(self.env_file(self.local_path(entry, item_path), item_path, required))
        if raw.get("environment") is not None:
            values.update(self.dict_or_list(raw["environment"], (*path, "environment")))
        environ = self.loaded.environ
        result: dict[str, str] = {}
        for key, value in values.items():
            if value is not None:
                result[key] = value
            elif key in environ:
                result[key] = environ[key]
        return result

    def env_file(self, file: Path, path: KeyPath, required: bool) -> dict[str, str | None]:
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            if not required:
                return {}
            raise self.error(path, f"env file {file} not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise self.error(path, f"cannot read env file {file}: {e}") from None
        # `KEY` alone takes the client's value (or is dropped); the rest is `.env` syntax.
        bare: list[str] = []
        lines = text.splitlines()
        for number, line in enumerate(lines):
            stripped = line.strip()
            if stripped and not stripped.startswith("#") and "=" not in stripped:
                if any(c.isspace() for c in stripped.removeprefix("export ").strip()):
                    raise ComposeError(
                        f"invalid line in env file: {stripped!r}", file=str(file), line=number + 1
                    )
                bare.append(stripped.removeprefix("export ").strip())
                lines[number] = ""
        values: dict[str, str | None] = dict(parse_dotenv("\n".join(lines), str(file)))
        for key in bare:
            values.setdefault(key, None)
        return values

    def ports(self, value: Any, path: KeyPath) -> list[Port]:
        if isinstance(value, dict):
            self.keys(
                value,
                path,
                {"target", "published", "protocol", "mode", "host_ip"} | {"name", "app_protocol"},
            )
            if "target" not in value:
                raise self.error(path, "target is required")
            target = self.port_number(value["target"], (*path, "target"))
            protocol = self.choice(
                value.get("protocol", "tcp"), (*path, "protocol"), ("tcp", "udp")
            )
            mode = self.choice(value.get("mode", "ingress"), (*path, "mode"), ("ingress", "host"))
            if value.get("host_ip"):
                self.host_ip_warning(path)
            published = value.get("published")
            if published is None or published == "":
                return [Port(target, None, protocol, mode)]
            if isinstance(published, str) and "-" in published:
                low, high = self.port_range(published, (*path, "published"))
                if low != high:
                    raise self.error((*path, "published"), "a range needs as many targets")
                published = low
            return [Port(target, self.port_number(published, (*path, "published")), protocol, mode)]
        if isinstance(value, int) and not isinstance(value, bool):
            return [Port(self.port_number(value, path))]
        text = self.string(value, path)
        match = _PORT_RE.fullmatch(text)
        if match is None:
            raise self.error(path, f"invalid port '{text}'")
        if match["ip"]:
            self.host_ip_warning(path)
        protocol = match["protocol"] or "tcp"
        if protocol not in ("tcp", "udp"):
            raise self.error(path, f"invalid protocol '{protocol}' in port '{text}'")
        t_low, t_high = self.port_range(match["target"], path, text)
        targets = range(t_low, t_high + 1)
        if match["published"] is None:
            return [Port(t, None, protocol) for t in targets]
        p_low, p_high = self.port_range(match["published"], path, text)
        if p_high - p_low != t_high - t_low:
            raise self.error(path, f"invalid port '{text}': ranges of different sizes")
        return [Port(t, p_low + i, protocol) for i, t in enumerate(targets)]

    def service_ports(self, value: Any, path: KeyPath) -> tuple[Port, ...]:
        ports: list[Port] = []
        seen: set[tuple[int, str]] = set()
        for i, item in enumerate(self.sequence(value or [], path)):
            for port in self.ports(item, (*path, i)):
                if port.published is not None:
                    if (port.published, port.protocol) in seen:
                        raise self.error(
                            (*path, i),
                            f"port {port.published}/{port.protocol} is published more than once",
                        )
                    seen.add((port.published, port.protocol))
                ports.append(port)
        return tuple(ports)

    def host_ip_warning(self, path: KeyPath) -> None:
        key = ".".join(str(p) for p in path)
        self.warnings.append(f"{key}: the host IP is ignored: swarm publishes on all addresses")

    def port_number(self, value: Any, path: KeyPath) -> int:
        port = self.integer(value, path) if not isinstance(value, float) else -1
        if not 1 <= port <= 65535:
            raise self.error(path, f"invalid port '{value}'")
        return port

    def port_range(self, text: str, path: KeyPath, whole: str | None = None) -> tuple[int, int]:
        low_text, _, high_text = text.partition("-")
        low, high = int(low_text), int(high_text or low_text)
        if not (1 <= low <= high <= 65535):
            raise self.error(path, f"invalid port '{whole or text}'")
        return low, high

    def mount(self, value: Any, path: KeyPath, volumes: dict[str, Volume]) -> Mount:
        if isinstance(value, dict):
            return self.long_mount(value, path, volumes)
        text = self.string(value, path)
        parts = text.split(":")
        if len(parts) > 3 or not all(parts):
            raise self.error(path, f"invalid volume '{text}'")
        if len(parts) == 1:
            return Mount("volume", "", self.container_path(parts[0], path))
        source, target = parts[0], self.container_path(parts[1], path)
        modes = set(parts[2].split(",")) if len(parts) == 3 else set()
        if modes - VOLUME_MODES:
            raise self.error(path, f"invalid mode '{parts[2]}' in volume '{text}'")
        if "ro" in modes and "rw" in modes:
            raise self.error(path, f"invalid mode '{parts[2]}' in volume '{text}'")
        read_only = "ro" in modes
        if source.startswith((".", "/", "~")):
            return Mount("bind", str(self.local_path(source, path)), target, read_only)
        self.volume_ref(source, path, volumes)
        return Mount("volume", source, target, read_only)

    def long_mount(self, raw: dict[str, Any], path: KeyPath, volumes: dict[str, Volume]) -> Mount:
        self.keys(
            raw,
            path,
            {"type", "source", "target", "read_only", "bind", "volume", "tmpfs"} | {"consistency"},
        )
        kind = self.choice(raw.get("type", "volume"), (*path, "type"), ("volume", "bind", "tmpfs"))
        if "target" not in raw:
            raise self.error(path, "target is required")
        target = self.container_path(raw["target"], (*path, "target"))
        read_only = self.boolean(raw.get("read_only", False), (*path, "read_only"))
        for sub in ("bind", "volume", "tmpfs"):
            if sub in raw and sub != kind:
                raise self.error((*path, sub), f"not allowed with type {kind}")
        if kind == "tmpfs":
            if raw.get("source"):
                raise self.error((*path, "source"), "not allowed with type tmpfs")
            size = 0
            if raw.get("tmpfs") is not None:
                tmpfs = self.mapping(raw["tmpfs"], (*path, "tmpfs"))
                self.keys(tmpfs, (*path, "tmpfs"), {"size", "mode"})
                if tmpfs.get("size") is not None:
                    size = self.size(tmpfs["size"], (*path, "tmpfs", "size"))
            return Mount("tmpfs", "", target, read_only, size)
        if kind == "bind":
            if raw.get("bind") is not None:
                bind = self.mapping(raw["bind"], (*path, "bind"))
                self.keys(bind, (*path, "bind"), {"propagation", "create_host_path", "selinux"})
            if not raw.get("source"):
                raise self.error(path, "source is required for a bind mount")
            source = str(self.local_path(raw["source"], (*path, "source")))
            return Mount("bind", source, target, read_only)
        if raw.get("volume") is not None:
            options = self.mapping(raw["volume"], (*path, "volume"))
            self.keys(options, (*path, "volume"), {"nocopy", "subpath"})
        source = self.string(raw.get("source") or "", (*path, "source"))
        if source:
            self.volume_ref(source, (*path, "source"), volumes)
        return Mount("volume", source, target, read_only)

    def tmpfs(self, value: str, path: KeyPath) -> Mount:
        target, _, options = value.partition(":")
        size = 0
        for option in filter(None, options.split(",")):
            key, _, val = option.partition("=")
            if key == "size":
                size = self.size(val, path)
            elif key not in ("mode", "rw", "ro", "noexec", "nosuid", "nodev", "exec", "suid"):
                raise self.error(path, f"unsupported tmpfs option '{option}'")
        return Mount(
            "tmpfs", "", self.container_path(target, path), "ro" in options.split(","), size
        )

    def container_path(self, value: Any, path: KeyPath) -> str:
        text = self.string(value, path)
        if not text.startswith("/"):
            raise self.error(path, f"container path '{text}' must be absolute")
        return text

    def volume_ref(self, source: str, path: KeyPath, volumes: dict[str, Volume]) -> None:
        if source not in volumes:
            raise self.error(path, f"undefined volume '{source}'")

    def service_networks(
        self, value: Any, path: KeyPath, networks: dict[str, Network]
    ) -> tuple[ServiceNetwork, ...]:
        if value is None:
            return (ServiceNetwork("default"),)
        result: list[ServiceNetwork] = []
        if isinstance(value, list):
            for i, item in enumerate(value):
                name = self.string(item, (*path, i))
                self.network_ref(name, (*path, i), networks)
                result.append(ServiceNetwork(name))
            return tuple(result)
        for name, options in self.mapping(value, path).items():
            at = (*path, name)
            self.network_ref(name, at, networks)
            aliases: tuple[str, ...] = ()
            if options is not None:
                opts = self.mapping(options, at)
                self.keys(
                    opts,
                    at,
                    {"aliases"},
                    {"ipv4_address", "ipv6_address", "link_local_ips", "mac_address"}
                    | {"driver_opts", "priority", "gw_priority", "interface_name"},
                    "networks.",
                )
                aliases = self.strings(opts.get("aliases") or [], (*at, "aliases"), single=False)
            result.append(ServiceNetwork(name, aliases))
        return tuple(result)

    def network_ref(self, name: str, path: KeyPath, networks: dict[str, Network]) -> None:
        if name != "default" and name not in networks:
            raise self.error(path, f"undefined network '{name}'")

    def file_refs(
        self, value: Any, path: KeyPath, specs: dict[str, FileSpec]
    ) -> tuple[FileRef, ...]:
        kind = str(path[-1]).rstrip("s")
        result: list[FileRef] = []
        for i, item in enumerate(self.sequence(value or [], path)):
            at = (*path, i)
            if isinstance(item, str):
                ref = FileRef(item, item)
            else:
                raw = self.mapping(item, at)
                self.keys(raw, at, {"source", "target", "uid", "gid", "mode"})
                if "source" not in raw:
                    raise self.error(at, "source is required")
                source = self.string(raw["source"], (*at, "source"))
                ref = FileRef(
                    source=source,
                    target=self.opt_string(raw, "target", at) or source,
                    uid=self.opt_string(raw, "uid", at),
                    gid=self.opt_string(raw, "gid", at),
                    mode=None if raw.get("mode") is None else self.mode(raw["mode"], (*at, "mode")),
                )
            if ref.source not in specs:
                raise self.error(at, f"undefined {kind} '{ref.source}'")
            result.append(ref)
        return tuple(result)

    def mode(self, value: Any, path: KeyPath) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0o7777:
            return value
        if isinstance(value, str) and re.fullmatch(r"0?[0-7]{1,4}|0o[0-7]{1,4}", value):
            return int(value.removeprefix("0o"), 8)
        raise self.error(path, f"invalid file mode '{value}'")

    def healthcheck(self, value: Any, path: KeyPath) -> Healthcheck:
        raw = self.mapping(value, path)
        self.keys(
            raw,
            path,
            {"test", "interval", "timeout", "start_period", "start_interval", "retries"}
            | {"disable"},
        )
        disable = self.boolean(raw.get("disable", False), (*path, "disable"))
        test: tuple[str, ...] | None = None
        if raw.get("test") is not None:
            if isinstance(raw["test"], str):
                test = ("CMD-SHELL", raw["test"])
            else:
                test = self.strings(raw["test"], (*path, "test"), single=False)
                if not test or test[0] not in ("NONE", "CMD", "CMD-SHELL"):
                    raise self.error((*path, "test"), "must start with NONE, CMD or CMD-SHELL")
                if test[0] == "NONE":
                    disable, test = True, None
        if disable:
            return Healthcheck(disable=True)

        def opt_duration(key: str) -> float | None:
            return None if raw.get(key) is None else self.duration(raw[key], (*path, key))

        return Healthcheck(
            test=test,
            interval=opt_duration("interval"),
            timeout=opt_duration("timeout"),
            start_period=opt_duration("start_period"),
            retries=None
            if raw.get("retries") is None
            else self.integer(raw["retries"], (*path, "retries")),
        )

    def extra_hosts(self, value: Any, path: KeyPath) -> tuple[str, ...]:
        if isinstance(value, dict):
            items = [(name, ip, (*path, name)) for name, ip in value.items()]
        else:
            items = []
            for i, entry in enumerate(self.sequence(value, path)):
                text = self.string(entry, (*path, i))
                sep = "=" if "=" in text else ":"
                name, found, ip = text.partition(sep)
                if not found or not name or not ip:
                    raise self.error((*path, i), f"invalid extra host '{text}' (NAME:IP)")
                items.append((name, ip, (*path, i)))
        hosts: list[str] = []
        for name, ip, at in items:
            addresses = self.strings(ip, at)
            for address in addresses:
                hosts.append(f"{name}:{address.strip('[]')}")
        return tuple(hosts)

    def ulimits(self, value: Any, path: KeyPath) -> dict[str, tuple[int, int]]:
        result: dict[str, tuple[int, int]] = {}
        for name, limit in self.mapping(value, path).items():
            at = (*path, name)
            if isinstance(limit, dict):
                self.keys(limit, at, {"soft", "hard"})
                if "soft" not in limit or "hard" not in limit:
                    raise self.error(at, "soft and hard are required")
                soft = self.integer(limit["soft"], (*at, "soft"), minimum=-1)
                hard = self.integer(limit["hard"], (*at, "hard"), minimum=-1)
                if soft > hard and hard != -1:
                    raise self.error(at, f"soft limit {soft} is above the hard limit {hard}")
                result[name] = (soft, hard)
            else:
                number = self.integer(limit, at, minimum=-1)
                result[name] = (number, number)
        return result

    def depends_on(self, value: Any, path: KeyPath) -> tuple[DependsOn, ...]:
        if isinstance(value, list):
            return tuple(DependsOn(self.string(v, (*path, i))) for i, v in enumerate(value))
        result: list[DependsOn] = []
        for name, options in self.mapping(value, path).items():
            at = (*path, name)
            condition = "service_started"
            if options is not None:
                opts = self.mapping(options, at)
                self.keys(opts, at, {"condition"}, {"restart", "required"}, "depends_on.")
                if "condition" in opts:
                    condition = self.choice(
                        opts["condition"], (*at, "condition"), DEPENDS_CONDITIONS
                    )
            result.append(DependsOn(name, condition))
        return tuple(result)

    def check_depends_on(self, services: dict[str, Service]) -> None:
        for service in services.values():
            for i, dep in enumerate(service.depends_on):
                if dep.service not in services:
                    at: KeyPath = ("services", service.name, "depends_on")
                    raw = self.loaded.data["services"][service.name]["depends_on"]
                    at = (*at, i) if isinstance(raw, list) else (*at, dep.service)
                    raise self.error(at, f"undefined service '{dep.service}'")
        done: set[str] = set()

        def visit(name: str, chain: list[str]) -> None:
            if name in chain:
                cycle = [*chain[chain.index(name) :], name]
                raise self.error(
                    ("services", cycle[0], "depends_on"), "depends_on cycle: " + " -> ".join(cycle)
                )
            if name in done:
                return
            for dep in services[name].depends_on:
                visit(dep.service, [*chain, name])
            done.add(name)

        for name in sorted(services):
            visit(name, [])

    def deploy(self, value: Any, path: KeyPath) -> Deploy:
        raw = self.mapping(value, path)
        self.keys(raw, path, DEPLOY_KEYS)
        mode = self.choice(raw.get("mode", "replicated"), (*path, "mode"), DEPLOY_MODES)
        replicas = None
        if raw.get("replicas") is not None:
            replicas = self.integer(raw["replicas"], (*path, "replicas"))
            if mode not in ("replicated", "replicated-job"):
                raise self.error((*path, "replicas"), f"not allowed with mode {mode}")
        constraints: tuple[str, ...] = ()
        preferences: list[str] = []
        max_per_node = None
        if raw.get("placement") is not None:
            at = (*path, "placement")
            placement = self.mapping(raw["placement"], at)
            self.keys(placement, at, {"constraints", "preferences", "max_replicas_per_node"})
            constraints = self.strings(placement.get("constraints") or [], (*at, "constraints"))
            prefs = self.sequence(placement.get("preferences") or [], (*at, "preferences"))
            for i, pref in enumerate(prefs):
                entry = self.mapping(pref, (*at, "preferences", i))
                self.keys(entry, (*at, "preferences", i), {"spread"})
                if "spread" not in entry:
                    raise self.error((*at, "preferences", i), "spread is required")
                preferences.append(self.string(entry["spread"], (*at, "preferences", i, "spread")))
            if placement.get("max_replicas_per_node") is not None:
                max_per_node = self.integer(
                    placement["max_replicas_per_node"], (*at, "max_replicas_per_node")
                )
        limits = reservations = Resources()
        if raw.get("resources") is not None:
            at = (*path, "resources")
            resources = self.mapping(raw["resources"], at)
            self.keys(resources, at, {"limits", "reservations"})
            limits = self.resources(resources.get("limits"), (*at, "limits"), set())
            reservations = self.resources(
                resources.get("reservations"),
                (*at, "reservations"),
                {"devices", "generic_resources"},
            )
        endpoint_mode = None
        if raw.get("endpoint_mode") is not None:
            endpoint_mode = self.choice(
                raw["endpoint_mode"], (*path, "endpoint_mode"), ENDPOINT_MODES
            )
        return Deploy(
            mode=mode,
            replicas=replicas,
            labels=self.labels(raw.get("labels") or {}, (*path, "labels")),
            endpoint_mode=endpoint_mode,
            constraints=constraints,
            preferences=tuple(preferences),
            max_replicas_per_node=max_per_node,
            limits=limits,
            reservations=reservations,
            restart_policy=self.restart_policy(
                raw.get("restart_policy"), (*path, "restart_policy")
            ),
            update_config=self.update_config(
                raw.get("update_config"), (*path, "update_config"), True
            ),
            rollback_config=self.update_config(
                raw.get("rollback_config"), (*path, "rollback_config"), False
            ),
        )

    def resources(self, value: Any, path: KeyPath, unsupported: set[str]) -> Resources:
        if value is None:
            return Resources()
        raw = self.mapping(value, path)
        self.keys(
            raw, path, {"cpus", "memory", "pids"}, unsupported, "deploy.resources.reservations."
        )
        return Resources(
            nano_cpus=0 if raw.get("cpus") is None else self.cpus(raw["cpus"], (*path, "cpus")),
            memory_bytes=0
            if raw.get("memory") is None
            else self.size(raw["memory"], (*path, "memory")),
            pids=0 if raw.get("pids") is None else self.integer(raw["pids"], (*path, "pids")),
        )

    def restart_policy(self, value: Any, path: KeyPath) -> RestartPolicy | None:
        if value is None:
            return None
        raw = self.mapping(value, path)
        self.keys(raw, path, {"condition", "delay", "max_attempts", "window"})
        return RestartPolicy(
            condition=self.choice(
                raw.get("condition", "any"), (*path, "condition"), RESTART_CONDITIONS
            ),
            delay=None
            if raw.get("delay") is None
            else self.duration(raw["delay"], (*path, "delay")),
            max_attempts=None
            if raw.get("max_attempts") is None
            else self.integer(raw["max_attempts"], (*path, "max_attempts")),
            window=None
            if raw.get("window") is None
            else self.duration(raw["window"], (*path, "window")),
        )

    def update_config(self, value: Any, path: KeyPath, update: bool) -> UpdateConfig | None:
        if value is None:
            return None
        raw = self.mapping(value, path)
        self.keys(raw, path, UPDATE_KEYS)
        actions = ("pause", "continue", "rollback") if update else ("pause", "continue")
        ratio = 0.0
        if raw.get("max_failure_ratio") is not None:
            ratio = self.number(raw["max_failure_ratio"], (*path, "max_failure_ratio"))
            if not 0 <= ratio <= 1:
                raise self.error((*path, "max_failure_ratio"), "must be between 0 and 1")
        return UpdateConfig(
            parallelism=self.integer(raw.get("parallelism", 1), (*path, "parallelism")),
            delay=self.duration(raw.get("delay", 0), (*path, "delay")),
            failure_action=self.choice(
                raw.get("failure_action", "pause"), (*path, "failure_action"), actions
            ),
            monitor=None
            if raw.get("monitor") is None
            else self.duration(raw["monitor"], (*path, "monitor")),
            max_failure_ratio=ratio,
            order=self.choice(raw.get("order", "stop-first"), (*path, "order"), ORDERS),
        )


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"'{value}'"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


def normalize(loaded: Loaded) -> Project:
    """Validate and normalise the loader's document; raises `ComposeError` on the first error."""
    return _Normalizer(loaded).project()


def dump(project: Project) -> str:
    """The normalised project as YAML (keys sorted; None, empty and false values left out)."""
    document = {
        section: {key: _prune(plain(value)) for key, value in getattr(project, section).items()}
        for section in ("services", "networks", "volumes", "secrets", "configs")
        if getattr(project, section)
    }
    return yaml.safe_dump(document, sort_keys=True, default_flow_style=False, allow_unicode=True)


_NO_RESOURCES = plain(Resources())


def _prune(value: Any) -> Any:
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {
            k: v
            for k, v in pruned.items()
            if not (v is None or v is False or v in ({}, [], _NO_RESOURCES))
        }
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value

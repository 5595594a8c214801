"""`service create` and `service update` flags -> `objects.ServiceSpec`, as pure functions.

Parsers take one flag's string and return plain values, raising `ValueError` with docker's
reason (wrapped by `cli.parse.FlagType` into `invalid argument "x" for "--flag" flag: ...`).
`build_spec` turns create's flags into a new spec; `merge_update` applies update's flags to
a copy of the current one. Flags come as click parsed them (a mapping of parameter name to
value, None when the flag was not given). Secrets and configs are named by the user and
stored by id: `resolve(kind, name) -> (id, name)` looks them up (the command asks the
managers); it raises `ValueError` for a missing one ("secret not found: x").

    spec = build_spec("busybox", ("sleep", "1d"), flags, resolve)
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from cli import parse
from cli.parse import MountSpec

if TYPE_CHECKING:
    from api import objects_pb2 as opb

Flags = Mapping[str, Any]
Resolver = Callable[[str, str], tuple[str, str]]  # (kind, name) -> (id, name)

MODES = ("replicated", "global", "replicated-job", "global-job")  # ServiceMode values
RESTART_CONDITIONS = ("any", "on-failure", "none")  # RestartCondition values
FAILURE_ACTIONS = ("pause", "continue", "rollback")  # FailureAction values
ORDERS = ("stop-first", "start-first")  # UpdateOrder values
PUBLISH_MODES = ("ingress", "host")
ENDPOINT_MODES = ("vip", "dnsrr")
DEFAULT_FILE_MODE = 0o444
NANO = 1_000_000_000


class FileRef(NamedTuple):
    """`--secret`/`--config`: source name, target ("" = default), uid, gid, mode."""

    source: str
    target: str = ""
    uid: int = 0
    gid: int = 0
    mode: int = DEFAULT_FILE_MODE


class Port(NamedTuple):
    """`--publish`: a PortConfig before it becomes a proto."""

    target: int
    published: int = 0
    protocol: str = "tcp"
    mode: str = "ingress"


class Network(NamedTuple):
    target: str
    aliases: tuple[str, ...] = ()


# ---- flag parsers -----------------------------------------------------------------


def _choice(value: str, choices: Sequence[str], what: str) -> int:
    if value.lower() not in choices:
        raise ValueError(f'invalid {what} "{value}" (use {", ".join(choices)})')
    return choices.index(value.lower())


def parse_mode(value: str) -> int:
    return _choice(value, MODES, "mode")


def parse_restart_condition(value: str) -> int:
    return _choice(value, RESTART_CONDITIONS, "restart condition")


def parse_failure_action(value: str) -> int:
    return _choice(value, FAILURE_ACTIONS, "failure action")


def parse_rollback_failure_action(value: str) -> int:
    return _choice(value, FAILURE_ACTIONS[:2], "failure action")


def parse_order(value: str) -> int:
    return _choice(value, ORDERS, "update order")


def parse_endpoint_mode(value: str) -> str:
    return ENDPOINT_MODES[_choice(value, ENDPOINT_MODES, "endpoint mode")]


def parse_uint(value: str) -> int:
    """Go's strconv.ParseUint: `-1` is refused as docker refuses `--replicas -1`."""
    if not value.isdigit():
        raise ValueError(f'strconv.ParseUint: parsing "{value}": invalid syntax')
    return int(value)


def parse_ratio(value: str) -> float:
    try:
        ratio = float(value)
    except ValueError:
        raise ValueError(f'strconv.ParseFloat: parsing "{value}": invalid syntax') from None
    if not 0.0 <= ratio <= 1.0:
        raise ValueError("the value must be between 0 and 1")
    return ratio


def parse_file_ref(value: str) -> FileRef:
    """`NAME` or `source=NAME[,target=T][,uid=U][,gid=G][,mode=0400]` (docker's --secret)."""
    if "=" not in value and "," not in value:
        if not value:
            raise ValueError("source is required")
        return FileRef(value)
    fields: dict[str, str] = {}
    for field in value.split(","):
        key, sep, val = field.partition("=")
        key = key.strip().lower()
        if not sep:
            raise ValueError(f"invalid field '{field}' must be a key=value pair")
        if key in ("src", "source"):
            key = "source"
        elif key in ("dst", "destination"):
            key = "target"
        if key not in ("source", "target", "uid", "gid", "mode"):
            raise ValueError(f"invalid field key {key}")
        fields[key] = val
    if not fields.get("source"):
        raise ValueError("source is required")
    try:
        uid, gid = int(fields.get("uid", "0")), int(fields.get("gid", "0"))
        mode = int(fields.get("mode", "444"), 8)
    except ValueError:
        raise ValueError(f"invalid uid, gid or mode in '{value}'") from None
    return FileRef(fields["source"], fields.get("target", ""), uid, gid, mode)


def parse_mount(value: str) -> MountSpec:
    """docker's `--mount` (type=bind|volume|tmpfs,source=,target=,readonly)."""
    return parse.parse_mount(value)


def parse_placement_pref(value: str) -> str:
    """`spread=node.labels.zone` -> `node.labels.zone` (the only strategy docker has)."""
    strategy, sep, arg = value.partition("=")
    if not sep or not arg:
        raise ValueError('placement preference must be of the format "<strategy>=<arg>"')
    if strategy.lower() != "spread":
        raise ValueError(f"unsupported placement preference {strategy} (only spread is supported)")
    return arg


def parse_network(value: str) -> Network:
    """`NAME` or `name=NAME[,alias=A]...` (`NAME,alias=A` accepted too)."""
    target, aliases = "", []
    for field in value.split(","):
        key, sep, val = field.partition("=")
        if not sep and not target:
            target = field
        elif key in ("name", "target") and sep:
            target = val
        elif key == "alias" and sep:
            aliases.append(val)
        else:
            raise ValueError(f"invalid field '{field}' in network '{value}'")
    if not target:
        raise ValueError("network name is required")
    return Network(target, tuple(aliases))


def parse_publish(value: str) -> Port:
    """`published=8080,target=80[,mode=host][,protocol=udp]` or `[8080:]80[/udp]`."""
    if "=" not in value:
        short = parse.parse_publish(value)
        if short.host_ip:
            raise ValueError(f"hostip is not supported: '{value}'")
        return Port(short.container_port, short.host_port, short.protocol)
    fields: dict[str, str] = {}
    for field in value.split(","):
        key, sep, val = field.partition("=")
        if not sep:
            raise ValueError(f"invalid field '{field}' must be a key=value pair")
        if key not in ("published", "target", "mode", "protocol"):
            raise ValueError(f"invalid field key {key}")
        fields[key] = val.lower()
    if "target" not in fields:
        raise ValueError("missing mandatory field 'target'")
    mode = fields.get("mode", "ingress")
    protocol = fields.get("protocol", "tcp")
    if mode not in PUBLISH_MODES:
        raise ValueError(f"invalid publish mode value ({mode}): must be either 'ingress' or 'host'")
    if protocol not in parse.PROTOCOLS:
        raise ValueError(f"invalid protocol value ({protocol})")
    target = _port_number(fields["target"])
    published = _port_number(fields["published"]) if fields.get("published") else 0
    return Port(target, published, protocol, mode)


def _port_number(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= 65535:
        raise ValueError(f"invalid port: {text}")
    return int(text)


def parse_publish_rm(value: str) -> tuple[int, str]:
    """`--publish-rm TARGET[/PROTO]` (docker removes by target port)."""
    port, _, protocol = value.partition("/")
    if protocol and protocol not in parse.PROTOCOLS:
        raise ValueError(f"invalid protocol value ({protocol})")
    return _port_number(port), protocol


def parse_dns(value: str) -> str:
    """`--dns IP`: an IPv4 or IPv6 address (docker's ValidateIPAddress)."""
    import ipaddress

    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise ValueError(f"IP address is not correctly formatted: {value}") from None


_DOMAIN_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"


def parse_dns_search(value: str) -> str:
    """`--dns-search DOMAIN` (or `.`: no search domain), as docker's ValidateDNSSearch."""
    import re

    domain = value.strip(" ")
    if domain == ".":
        return domain
    pattern = rf"({_DOMAIN_LABEL}\.)*{_DOMAIN_LABEL}\.?"
    if len(domain) >= 255 or not re.fullmatch(pattern, domain) or not domain[0].isalpha():
        raise ValueError(f"{value} is not a valid domain")
    return domain


def parse_dns_option(value: str) -> str:
    """`--dns-option OPT` (`ndots:2`, `timeout:1`, `rotate`): one resolv.conf word."""
    option = value.strip()
    if not option or any(c.isspace() or not c.isprintable() for c in option):
        raise ValueError(f"invalid DNS option: {value!r}")
    return option


def _host_parts(value: str) -> tuple[str, str]:
    """`NAME:IP` (or `NAME=IP`) -> (name, ip text); the IP may be `[v6]`."""
    name, sep, address = value.partition("=")
    if not sep:
        name, sep, address = value.partition(":")
    bad_name = any(c.isspace() or not c.isprintable() or c == "#" for c in name)
    if not sep or not name or bad_name:
        raise ValueError(f"bad format for add-host: {_go_quote(value)}")
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    return name, address


def _go_quote(text: str) -> str:
    import json

    return json.dumps(text, ensure_ascii=False)


def parse_host(value: str) -> str:
    """`--host NAME:IP` -> the /etc/hosts line `IP NAME`, as docker stores it
    (ContainerSpec.Hosts: "IP_address canonical_hostname")."""
    import ipaddress

    name, address = _host_parts(value)
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"invalid IP address in add-host: {_go_quote(address)}") from None
    return f"{ip} {name}"


def parse_host_rm(value: str) -> tuple[str, str]:
    """`--host-rm NAME[:IP]` -> (name, ip or ""): the name's mappings (to that IP)."""
    if ":" not in value and "=" not in value:
        if not value or any(c.isspace() for c in value):
            raise ValueError(f"bad format for add-host: {_go_quote(value)}")
        return value, ""
    name, address = _host_parts(value)
    return name, parse_host(f"{name}:{address}").split(" ")[0]


def parse_entrypoint(value: str) -> list[str]:
    try:
        return shlex.split(value)
    except ValueError as e:
        raise ValueError(f"invalid entrypoint: {e}") from None


# ---- create -----------------------------------------------------------------------


def build_spec(image: str, args: Sequence[str], flags: Flags, resolve: Resolver) -> opb.ServiceSpec:
    """The ServiceSpec of `service create IMAGE [ARGS...]` and its flags."""
    from api import objects_pb2 as opb

    mode: int = flags.get("mode") or 0
    spec = opb.ServiceSpec(name=flags.get("name") or "")
    spec.mode = mode  # type: ignore[assignment]  # a ServiceMode value
    spec.labels.update(dict(flags.get("label") or ()))
    container = spec.task.container
    container.image = image
    container.args.extend(args)
    env_files = flags.get("env_file") or ()
    env = [entry for file in env_files for entry in file]
    env += [e for e in flags.get("env") or () if e is not None]
    container.env.extend(env)
    container.labels.update(dict(flags.get("container_label") or ()))
    for mount in flags.get("mount") or ():
        container.mounts.append(build_mount(mount))
    spec.task.placement.constraints.extend(c.strip() for c in flags.get("constraint") or ())
    spec.task.placement.preferences.extend(flags.get("placement_pref") or ())
    for ref in flags.get("secret") or ():
        _add_file(container.secrets, resolve_ref(ref, "secret", resolve), "secret")
    for ref in flags.get("config") or ():
        _add_file(container.configs, resolve_ref(ref, "config", resolve), "config")
    for network in flags.get("network") or ():
        spec.task.networks.append(build_network(network))
    container.dns_nameservers.extend(_unique(flags.get("dns") or ()))
    container.dns_search.extend(_unique(flags.get("dns_search") or ()))
    container.dns_options.extend(_unique(flags.get("dns_option") or ()))
    container.hosts.extend(_unique(flags.get("host") or ()))
    for port in flags.get("publish") or ():
        _add_port(spec.endpoint.ports, build_port(port))
    if flags.get("replicas") is None and mode in (opb.REPLICATED, opb.REPLICATED_JOB):
        spec.replicas = 1
    apply_common(spec, flags)
    if mode == opb.REPLICATED_JOB and flags.get("max_concurrent") is None:
        spec.max_concurrent = spec.replicas
    return spec


def _unique(values: Iterable[str]) -> list[str]:
    """`values` in order, each once."""
    return list(dict.fromkeys(values))


def resolve_ref(ref: FileRef, kind: str, resolve: Resolver) -> opb.FileReference:
    """A FileReference for `ref`: the object's id, and docker's default target
    (secrets: the name, under /run/secrets; configs: `/<name>`)."""
    from api import objects_pb2 as opb

    object_id, name = resolve(kind, ref.source)
    target = ref.target or (name if kind == "secret" else "/" + name)
    return opb.FileReference(
        id=object_id, name=name, target=target, uid=ref.uid, gid=ref.gid, mode=ref.mode
    )


def _add_file(refs: Any, ref: opb.FileReference, kind: str) -> None:
    if any(r.target == ref.target for r in refs):
        raise ValueError(f"duplicate {kind} target for {ref.name} not allowed")
    refs.append(ref)


def build_mount(mount: MountSpec) -> opb.Mount:
    from api import objects_pb2 as opb

    return opb.Mount(
        type=mount.type,
        source=mount.source,
        target=mount.target,
        read_only=mount.read_only,
        tmpfs_size=mount.tmpfs_size,
    )


def build_network(network: Network) -> opb.NetworkAttachmentConfig:
    from api import objects_pb2 as opb

    return opb.NetworkAttachmentConfig(target=network.target, aliases=network.aliases)


def build_port(port: Port) -> opb.PortConfig:
    from api import objects_pb2 as opb

    return opb.PortConfig(
        protocol=port.protocol,
        target_port=port.target,
        published_port=port.published,
        publish_mode=port.mode,
    )


def _add_port(ports: Any, port: opb.PortConfig) -> None:
    """Add `port`, replacing one that publishes the same port (or the same target)."""

    def same(p: opb.PortConfig) -> bool:
        if p.protocol != port.protocol:
            return False
        if port.published_port:
            return bool(p.published_port == port.published_port)
        return bool(p.target_port == port.target_port and not p.published_port)

    kept = [p for p in ports if not same(p)]
    del ports[:]
    ports.extend([*kept, port])


# ---- create and update: the flags both have ---------------------------------------


def apply_common(spec: opb.ServiceSpec, flags: Flags) -> None:
    """Set what create's and update's shared flags name (None: left as it is)."""
    from api import objects_pb2 as opb

    _check_mode_flags(spec, flags)
    task, container = spec.task, spec.task.container
    _set(spec, "replicas", flags.get("replicas"))
    _set(spec, "max_concurrent", flags.get("max_concurrent"))
    _set(task.placement, "max_replicas", flags.get("replicas_max_per_node"))
    _set(container, "hostname", flags.get("hostname"))
    _set(container, "user", flags.get("user"))
    _set(container, "dir", flags.get("workdir"))
    _set(container, "read_only", flags.get("read_only"))
    _set(container, "stop_signal", flags.get("stop_signal"))
    _set(container, "stop_grace_period", flags.get("stop_grace_period"))
    if flags.get("entrypoint") is not None:
        del container.command[:]
        container.command.extend(flags["entrypoint"])
        container.command_set = True
    _add_unique(container.cap_add, flags.get("cap_add"), remove_from=container.cap_drop)
    _add_unique(container.cap_drop, flags.get("cap_drop"), remove_from=container.cap_add)
    _apply_health(container.healthcheck, flags)
    for prefix, resources in (
        ("limit", task.resources.limits),
        ("reserve", task.resources.reservations),
    ):
        _set(resources, "nano_cpus", flags.get(f"{prefix}_cpu"))
        _set(resources, "memory_bytes", flags.get(f"{prefix}_memory"))
    _set(task.resources.limits, "pids", flags.get("limit_pids"))
    _set(task.restart, "condition", flags.get("restart_condition"))
    _set(task.restart, "delay", flags.get("restart_delay"))
    _set(task.restart, "max_attempts", flags.get("restart_max_attempts"))
    _set(task.restart, "window", flags.get("restart_window"))
    for prefix, config in (("update", spec.update), ("rollback", spec.rollback)):
        _set(config, "parallelism", flags.get(f"{prefix}_parallelism"))
        _set(config, "delay", flags.get(f"{prefix}_delay"))
        _set(config, "failure_action", flags.get(f"{prefix}_failure_action"))
        _set(config, "monitor", flags.get(f"{prefix}_monitor"))
        _set(config, "max_failure_ratio", flags.get(f"{prefix}_max_failure_ratio"))
        _set(config, "order", flags.get(f"{prefix}_order"))
    _set(spec.endpoint, "mode", flags.get("endpoint_mode"))
    if spec.mode == opb.REPLICATED_JOB and spec.max_concurrent > spec.replicas:
        spec.max_concurrent = spec.replicas


def _check_mode_flags(spec: opb.ServiceSpec, flags: Flags) -> None:
    from api import objects_pb2 as opb

    if flags.get("replicas") is not None and spec.mode not in (opb.REPLICATED, opb.REPLICATED_JOB):
        raise ValueError("replicas can only be used with replicated or replicated-job mode")
    if flags.get("max_concurrent") is not None and spec.mode != opb.REPLICATED_JOB:
        raise ValueError("max-concurrent can only be used with replicated-job mode")
    if flags.get("replicas_max_per_node") is not None and spec.mode != opb.REPLICATED:
        raise ValueError("replicas-max-per-node can only be used with replicated mode")


def _set(message: Any, field: str, value: Any) -> None:
    if value is not None:
        setattr(message, field, value)


def _add_unique(values: Any, new: Iterable[str] | None, *, remove_from: Any) -> None:
    for value in new or ():
        if value not in values:
            values.append(value)
        while value in remove_from:
            remove_from.remove(value)


HEALTH_FLAGS = ("health_interval", "health_timeout", "health_retries", "health_start_period")


def _apply_health(health: opb.HealthConfig, flags: Flags) -> None:
    given = [f for f in ("health_cmd", *HEALTH_FLAGS) if flags.get(f) is not None]
    if flags.get("no_healthcheck"):
        if given:
            raise ValueError("--no-healthcheck conflicts with --health-* options")
        health.Clear()
        health.test.append("NONE")
        return
    if flags.get("health_cmd") is not None:
        del health.test[:]
        health.test.extend(["CMD-SHELL", flags["health_cmd"]] if flags["health_cmd"] else [])
    elif given and list(health.test) == ["NONE"]:
        del health.test[:]
    _set(health, "interval", flags.get("health_interval"))
    _set(health, "timeout", flags.get("health_timeout"))
    _set(health, "retries", flags.get("health_retries"))
    _set(health, "start_period", flags.get("health_start_period"))


# ---- update -----------------------------------------------------------------------


def merge_update(current: opb.ServiceSpec, flags: Flags, resolve: Resolver) -> opb.ServiceSpec:
    """A copy of `current` with `service update`'s flags applied (docker's -add/-rm:
    removals first, then additions, each replacing an entry with the same key)."""
    from api import objects_pb2 as opb

    spec = opb.ServiceSpec()
    spec.CopyFrom(current)
    task, container = spec.task, spec.task.container
    _set(container, "image", flags.get("image"))
    if flags.get("args") is not None:
        del container.args[:]
        container.args.extend(flags["args"])
    _merge_list(container.env, flags.get("env_rm"), flags.get("env_add"), _env_key, _env_key)
    _merge_map(spec.labels, flags.get("label_rm"), flags.get("label_add"))
    _merge_map(container.labels, flags.get("container_label_rm"), flags.get("container_label_add"))
    _merge_messages(
        container.mounts,
        flags.get("mount_rm"),
        [build_mount(m) for m in flags.get("mount_add") or ()],
        key=lambda m: m.target,
    )
    placement = task.placement
    _merge_list(placement.constraints, flags.get("constraint_rm"), flags.get("constraint_add"))
    _merge_list(
        placement.preferences, flags.get("placement_pref_rm"), flags.get("placement_pref_add")
    )
    for kind in ("secret", "config"):
        refs = container.secrets if kind == "secret" else container.configs
        _merge_messages(refs, flags.get(f"{kind}_rm"), [], key=lambda r: r.name)
        for ref in flags.get(f"{kind}_add") or ():
            _add_file(refs, resolve_ref(ref, kind, resolve), kind)
    _merge_messages(
        task.networks,
        flags.get("network_rm"),
        [build_network(n) for n in flags.get("network_add") or ()],
        key=lambda n: n.target,
    )
    _merge_list(container.dns_nameservers, flags.get("dns_rm"), flags.get("dns_add"))
    _merge_list(container.dns_search, flags.get("dns_search_rm"), flags.get("dns_search_add"))
    _merge_list(container.dns_options, flags.get("dns_option_rm"), flags.get("dns_option_add"))
    _merge_hosts(container.hosts, flags.get("host_rm"), flags.get("host_add"))
    removed_ports = flags.get("publish_rm") or ()
    kept = [p for p in spec.endpoint.ports if not _port_removed(p, removed_ports)]
    del spec.endpoint.ports[:]
    spec.endpoint.ports.extend(kept)
    for port in flags.get("publish_add") or ():
        _add_port(spec.endpoint.ports, build_port(port))
    apply_common(spec, flags)
    if flags.get("force"):
        task.force_update += 1
    return spec


def _env_key(entry: str) -> str:
    return entry.partition("=")[0]


def _same(value: str) -> str:
    return value.strip()


def _merge_list(
    values: Any,
    remove: Iterable[str] | None,
    add: Iterable[str | None] | None,
    rm_key: Callable[[str], str] = _same,
    add_key: Callable[[str], str] = _same,
) -> None:
    """Remove entries whose key is in `remove`, then add (replacing an equal key)."""
    gone = {rm_key(r) for r in remove or ()}
    result = [v for v in values if rm_key(v) not in gone]
    for new in add or ():
        if new is None:
            continue
        result = [v for v in result if add_key(v) != add_key(new)]
        result.append(new.strip() if add_key is _same else new)
    del values[:]
    values.extend(result)


def _merge_map(
    values: Any, remove: Iterable[str] | None, add: Iterable[tuple[str, str]] | None
) -> None:
    for key in remove or ():
        values.pop(key, None)
    for key, value in add or ():
        values[key] = value


def _merge_messages(
    values: Any, remove: Iterable[str] | None, add: Sequence[Any], *, key: Callable[[Any], str]
) -> None:
    gone = set(remove or ()) | {key(a) for a in add}
    kept = [v for v in values if key(v) not in gone]
    del values[:]
    values.extend([*kept, *add])


def _merge_hosts(
    hosts: Any, remove: Iterable[tuple[str, str]] | None, add: Iterable[str] | None
) -> None:
    """docker's --host-rm NAME[:IP] then --host-add: a removed name leaves every
    `IP NAME [ALIASES]` line (or only the one with that IP); a line left without names
    goes; an added line already there is not repeated."""
    result: list[str] = []
    for line in hosts:
        if len(line.split()) < 2:  # not an `IP NAME` line: not ours to edit
            result.append(line)
            continue
        ip, *names = line.split()
        names = [
            n for n in names if not any(n == rn and rip in ("", ip) for rn, rip in remove or ())
        ]
        if names:
            result.append(" ".join([ip, *names]))
    for line in add or ():
        if line not in result:
            result.append(line)
    del hosts[:]
    hosts.extend(result)


def _port_removed(port: opb.PortConfig, removed: Iterable[tuple[int, str]]) -> bool:
    return any(
        port.target_port == target and (not protocol or port.protocol == protocol)
        for target, protocol in removed
    )


def scale_spec(current: opb.ServiceSpec, replicas: int) -> opb.ServiceSpec:
    """`service scale SVC=N`: a copy with N replicas (replicated services and jobs)."""
    from api import objects_pb2 as opb

    if current.mode not in (opb.REPLICATED, opb.REPLICATED_JOB):
        raise ValueError("scale can only be used with replicated or replicated-job mode")
    spec = opb.ServiceSpec()
    spec.CopyFrom(current)
    spec.replicas = replicas
    return spec


def parse_scale(value: str) -> tuple[str, int]:
    """`SERVICE=REPLICAS` of `service scale`."""
    name, sep, count = value.partition("=")
    if not sep or not name:
        raise ValueError(f"invalid scale specifier '{value}' (use SERVICE=REPLICAS)")
    if not count.isdigit():
        raise ValueError(f"invalid replicas value {count}: {count} is not a valid number")
    return name, int(count)

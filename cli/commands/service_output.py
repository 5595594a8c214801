"""What `pyswarm service` prints: `ls` and `ps` rows, the `inspect` document and its
`--pretty` text, in docker's field names and words. Pure functions of the objects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cli import output
from cli.commands.node import go_json_time
from cli.progress import strip_digest
from cli.servicespec import FAILURE_ACTIONS, MODES, ORDERS, RESTART_CONDITIONS

if TYPE_CHECKING:
    from api import objects_pb2 as opb
    from api import swarm_pb2 as spb

LS_HEADERS = ("ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS")
PS_HEADERS = (
    "ID", "NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR", "PORTS",
)  # fmt: skip
MAX_ERROR = 30  # docker's maxErrLength in `service ps`
NANO = 1_000_000_000
UPDATE_STATES = (
    "", "updating", "paused", "completed", "rollback_started", "rollback_paused",
    "rollback_completed",
)  # fmt: skip


def mode_name(spec: opb.ServiceSpec) -> str:
    """`replicated`, `global`, `replicated job`, `global job` (service ls MODE)."""
    return MODES[spec.mode].replace("-", " ")


def ports_text(ports: Sequence[opb.PortConfig], *, ingress: bool = True) -> str:
    """`*:8080->80/tcp, *:53->53/udp`."""
    return ", ".join(
        f"*:{p.published_port}->{p.target_port}/{p.protocol or 'tcp'}"
        for p in ports
        if p.published_port and (not ingress or (p.publish_mode or "ingress") == "ingress")
    )


def replicas_text(info: spb.ServiceInfo) -> str:
    spec = info.service.spec
    text = f"{info.running}/{info.desired}"
    if MODES[spec.mode] == "replicated-job":
        return f"{text} ({info.completed}/{spec.replicas} completed)"
    if MODES[spec.mode] == "global-job":
        return f"{text} ({info.completed}/{info.desired} completed)"
    if MODES[spec.mode] == "replicated" and spec.task.placement.max_replicas:
        return f"{text} (max {spec.task.placement.max_replicas} per node)"
    return text


def ls_row(info: spb.ServiceInfo) -> dict[str, Any]:
    """A `service ls` row with docker's field names."""
    service = info.service
    ports = service.endpoint.ports or service.spec.endpoint.ports
    return {
        "ID": output.short_id(service.meta.id),
        "Name": service.spec.name,
        "Mode": mode_name(service.spec),
        "Replicas": replicas_text(info),
        "Image": strip_digest(service.spec.task.container.image),
        "Ports": ports_text(ports),
    }


def ls_matches(info: spb.ServiceInfo, filters: Sequence[tuple[str, str]]) -> bool:
    """docker's `service ls -f`: id=, name=, label=K[=V], mode=replicated|global."""
    service = info.service
    wanted: dict[str, list[str]] = {}
    for key, value in filters:
        wanted.setdefault(key, []).append(value)

    def check(key: str, value: str) -> bool:
        if key == "id":
            return service.meta.id.startswith(value)
        if key == "name":
            return service.spec.name.startswith(value)
        if key == "mode":
            return MODES[service.spec.mode] == value
        name, sep, val = value.partition("=")
        return name in service.spec.labels and (not sep or service.spec.labels[name] == val)

    return all(any(check(k, v) for v in values) for k, values in wanted.items())


# ---- service ps -------------------------------------------------------------------


def sort_tasks(tasks: Sequence[opb.Task]) -> list[opb.Task]:
    """docker's order: by service, slot (or node), then newest first."""
    return sorted(
        tasks,
        # a replicated task's slot is its place, whichever node ran it; global: the node
        key=lambda t: (
            t.service_name,
            t.service_id,
            t.slot,
            "" if t.slot else t.node_id,
            -t.meta.created_at,
        ),
    )


def ps_rows(
    tasks: Sequence[opb.Task],
    hostnames: Mapping[str, str],
    *,
    now: float,
    no_trunc: bool = False,
) -> list[dict[str, Any]]:
    """`service ps` rows: history rows (an earlier task of the same slot) as ` \\_ web.1`."""
    from api.tasks import short_name, state_name

    rows, previous = [], ""
    for task in sort_tasks(tasks):
        name = short_name(task)
        shown = f" \\_ {name}" if name == previous else name
        previous = name
        error = task.status.err
        if not no_trunc and len(error) > MAX_ERROR:
            error = error[: MAX_ERROR - 1] + "…"
        image = task.spec.container.image
        rows.append(
            {
                "ID": task.meta.id if no_trunc else output.short_id(task.meta.id),
                "Name": shown,
                "Image": image if no_trunc else strip_digest(image),
                "Node": hostnames.get(task.node_id, task.node_id),
                "DesiredState": state_name(task.desired_state),
                "CurrentState": f"{state_name(task.status.state)} "
                + output.ago(task.status.timestamp, now=now),
                "Error": f'"{error}"' if error else "",
                "Ports": ports_text(task.status.ports, ingress=False),
            }
        )
    return rows


PS_FIELDS = ("ID", "Name", "Image", "Node", "DesiredState", "CurrentState", "Error", "Ports")


def ps_cells(rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    return [[str(row[f]) for f in PS_FIELDS] for row in rows]


# ---- logs -------------------------------------------------------------------------


def log_prefix(
    message: spb.LogMessage,
    task: opb.Task | None,
    hostnames: Mapping[str, str],
    *,
    timestamps: bool = False,
    raw: bool = False,
    task_ids: bool = True,
    trunc: bool = True,
    resolve: bool = True,
) -> str:
    """What goes before a log line: `[TIMESTAMP ]web.1.abc123def456@node    | `; with
    `raw` only the timestamp (if asked)."""
    stamp = output.rfc3339_nano(message.timestamp) + " " if timestamps else ""
    if raw:
        return stamp
    task_id = message.task_id[:12] if trunc else message.task_id
    if task is None:
        name = task_id
    else:
        from api.tasks import short_name

        name = short_name(task) if resolve else f"{task.service_id}.{task.slot or task.node_id}"
        if task_ids:
            name = f"{name}.{task_id}"
    node = hostnames.get(message.node_id, message.node_id) if resolve else message.node_id
    return f"{stamp}{name}@{node}    | "


# ---- inspect ----------------------------------------------------------------------


def nanos(seconds: float) -> int:
    return round(seconds * NANO)


def go_duration(seconds: float) -> str:
    """Go's time.Duration.String(): `5s`, `1m30s`, `1h0m0s`, `500ms`, `0s`."""
    ns = nanos(seconds)
    if ns == 0:
        return "0s"
    if ns < NANO:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000)):
            if ns >= size:
                return f"{ns / size:g}{unit}"
        return f"{ns}ns"
    hours, rest = divmod(ns, 3600 * NANO)
    minutes, rest = divmod(rest, 60 * NANO)
    secs = f"{rest / NANO:.9f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    return f"{minutes}m{secs}" if minutes else secs


def _file_refs(refs: Sequence[opb.FileReference], kind: str) -> list[dict[str, Any]]:
    return [
        {
            "File": {
                "Name": r.target,
                "UID": str(r.uid),
                "GID": str(r.gid),
                "Mode": r.mode or 0o444,
            },
            f"{kind}ID": r.id,
            f"{kind}Name": r.name,
        }
        for r in refs
    ]


def container_doc(c: opb.ContainerSpec) -> dict[str, Any]:
    doc: dict[str, Any] = {"Image": c.image}
    optional: dict[str, Any] = {
        "Labels": dict(c.labels),
        "Command": list(c.command) if c.command_set else None,
        "Args": list(c.args),
        "Hostname": c.hostname,
        "Env": list(c.env),
        "Dir": c.dir,
        "User": c.user,
        "Mounts": [
            {"Type": m.type, "Source": m.source, "Target": m.target, "ReadOnly": m.read_only}
            | ({"TmpfsOptions": {"SizeBytes": m.tmpfs_size}} if m.tmpfs_size else {})
            for m in c.mounts
        ],
        "ReadOnly": c.read_only,
        "StopSignal": c.stop_signal,
        "StopGracePeriod": nanos(c.stop_grace_period) if c.HasField("stop_grace_period") else None,
        "Secrets": _file_refs(c.secrets, "Secret"),
        "Configs": _file_refs(c.configs, "Config"),
        "CapabilityAdd": list(c.cap_add),
        "CapabilityDrop": list(c.cap_drop),
    }
    if c.HasField("healthcheck") and c.healthcheck.test:
        h = c.healthcheck
        optional["Healthcheck"] = {"Test": list(h.test)} | {
            k: v
            for k, v in (
                ("Interval", nanos(h.interval)),
                ("Timeout", nanos(h.timeout)),
                ("StartPeriod", nanos(h.start_period)),
                ("Retries", h.retries),
            )
            if v
        }
    doc |= {k: v for k, v in optional.items() if v not in (None, "", [], {}, False)}
    doc["Isolation"] = "default"
    return doc


def _resources(r: opb.Resources) -> dict[str, Any]:
    pairs = (("NanoCPUs", r.nano_cpus), ("MemoryBytes", r.memory_bytes), ("Pids", r.pids))
    return {k: v for k, v in pairs if v}


def update_config_doc(u: opb.UpdateConfig) -> dict[str, Any]:
    from api.tasks import DEFAULT_MONITOR, DEFAULT_PARALLELISM

    doc: dict[str, Any] = {
        "Parallelism": u.parallelism if u.HasField("parallelism") else DEFAULT_PARALLELISM,
    }
    if u.delay:
        doc["Delay"] = nanos(u.delay)
    doc |= {
        "FailureAction": FAILURE_ACTIONS[u.failure_action],
        "Monitor": nanos(u.monitor if u.HasField("monitor") else DEFAULT_MONITOR),
        "MaxFailureRatio": u.max_failure_ratio,
        "Order": ORDERS[u.order],
    }
    return doc


def mode_doc(spec: opb.ServiceSpec) -> dict[str, Any]:
    mode = MODES[spec.mode]
    if mode == "replicated":
        return {"Replicated": {"Replicas": spec.replicas}}
    if mode == "replicated-job":
        return {
            "ReplicatedJob": {
                "MaxConcurrent": spec.max_concurrent,
                "TotalCompletions": spec.replicas,
            }
        }
    return {"Global": {}} if mode == "global" else {"GlobalJob": {}}


def port_doc(p: opb.PortConfig) -> dict[str, Any]:
    doc: dict[str, Any] = {"Protocol": p.protocol or "tcp", "TargetPort": p.target_port}
    if p.published_port:
        doc["PublishedPort"] = p.published_port
    doc["PublishMode"] = p.publish_mode or "ingress"
    return doc


def spec_doc(spec: opb.ServiceSpec) -> dict[str, Any]:
    task = spec.task
    restart: dict[str, Any] = {
        "Condition": RESTART_CONDITIONS[task.restart.condition],
        "Delay": nanos(task.restart.delay if task.restart.HasField("delay") else 5.0),
        "MaxAttempts": task.restart.max_attempts,
    }
    if task.restart.window:
        restart["Window"] = nanos(task.restart.window)
    placement: dict[str, Any] = {}
    if task.placement.constraints:
        placement["Constraints"] = list(task.placement.constraints)
    if task.placement.preferences:
        placement["Preferences"] = [
            {"Spread": {"SpreadDescriptor": p}} for p in task.placement.preferences
        ]
    if task.placement.max_replicas:
        placement["MaxReplicas"] = task.placement.max_replicas
    template: dict[str, Any] = {
        "ContainerSpec": container_doc(task.container),
        "Resources": {
            "Limits": _resources(task.resources.limits),
            "Reservations": _resources(task.resources.reservations),
        },
        "RestartPolicy": restart,
        "Placement": placement,
    }
    if task.networks:
        template["Networks"] = [
            {"Target": n.target} | ({"Aliases": list(n.aliases)} if n.aliases else {})
            for n in task.networks
        ]
    template["ForceUpdate"] = task.force_update
    template["Runtime"] = "container"
    endpoint: dict[str, Any] = {"Mode": spec.endpoint.mode or "vip"}
    if spec.endpoint.ports:
        endpoint["Ports"] = [port_doc(p) for p in spec.endpoint.ports]
    doc: dict[str, Any] = {"Name": spec.name, "Labels": dict(spec.labels)}
    return doc | {
        "TaskTemplate": template,
        "Mode": mode_doc(spec),
        "UpdateConfig": update_config_doc(spec.update),
        "RollbackConfig": update_config_doc(spec.rollback),
        "EndpointSpec": endpoint,
    }


def service_doc(s: opb.Service) -> dict[str, Any]:
    """docker's `service inspect` document."""
    doc: dict[str, Any] = {
        "ID": s.meta.id,
        "Version": {"Index": s.meta.version},
        "CreatedAt": go_json_time(s.meta.created_at),
        "UpdatedAt": go_json_time(s.meta.updated_at),
        "Spec": spec_doc(s.spec),
    }
    if s.HasField("previous_spec"):
        doc["PreviousSpec"] = spec_doc(s.previous_spec)
    endpoint: dict[str, Any] = {"Spec": doc["Spec"]["EndpointSpec"]}
    if s.endpoint.ports:
        endpoint["Ports"] = [port_doc(p) for p in s.endpoint.ports]
    doc["Endpoint"] = endpoint
    if s.update_status.state:
        status: dict[str, Any] = {"State": UPDATE_STATES[s.update_status.state]}
        if s.update_status.started_at:
            status["StartedAt"] = go_json_time(s.update_status.started_at)
        if s.update_status.completed_at:
            status["CompletedAt"] = go_json_time(s.update_status.completed_at)
        status["Message"] = s.update_status.message
        doc["UpdateStatus"] = status
    if MODES[s.spec.mode].endswith("job"):
        doc["JobStatus"] = {"JobIteration": {"Index": s.job_iteration}}
    return doc


# ---- inspect --pretty -------------------------------------------------------------


def _update_lines(title: str, u: opb.UpdateConfig, order_word: str) -> list[str]:
    doc = update_config_doc(u)
    lines = [f"{title}:", f" Parallelism:\t{doc['Parallelism']}"]
    if u.delay:
        lines.append(f" Delay:\t\t{go_duration(u.delay)}")
    return [
        *lines,
        f" On failure:\t{doc['FailureAction']}",
        f" Monitoring Period: {go_duration(doc['Monitor'] / NANO)}",
        f" Max failure ratio: {u.max_failure_ratio:g}",
        f" {order_word} order:    {doc['Order']}",
    ]


def pretty_text(s: opb.Service) -> str:
    """docker's `service inspect --pretty`."""
    spec, task = s.spec, s.spec.task
    c = task.container
    lines = [f"ID:\t\t{s.meta.id}", f"Name:\t\t{spec.name}"]
    if spec.labels:
        lines += ["Labels:", *(f" {k}={v}" for k, v in sorted(spec.labels.items()))]
    mode = MODES[spec.mode]
    lines.append(f"Service Mode:\t{mode.replace('-', ' ').title().replace(' ', '')}")
    if mode == "replicated":
        lines.append(f" Replicas:\t{spec.replicas}")
    elif mode == "replicated-job":
        lines += [
            f" Max Concurrent:\t{spec.max_concurrent}",
            f" Total Completions:\t{spec.replicas}",
        ]
    if s.update_status.state:
        lines += [
            "UpdateStatus:",
            f" State:\t\t{UPDATE_STATES[s.update_status.state]}",
            f" Message:\t{s.update_status.message}",
        ]
    placement = task.placement
    if placement.constraints or placement.preferences or placement.max_replicas:
        lines.append("Placement:")
        if placement.constraints:
            lines.append(f" Constraints:\t[{' '.join(placement.constraints)}]")
        if placement.preferences:
            lines.append(" Preferences:")
            lines += [f"   Spread: {p}" for p in placement.preferences]
        if placement.max_replicas:
            lines.append(f" Max Replicas Per Node:\t{placement.max_replicas}")
    lines += _update_lines("UpdateConfig", spec.update, "Update")
    lines += _update_lines("RollbackConfig", spec.rollback, "Rollback")
    lines += ["ContainerSpec:", f" Image:\t\t{c.image}"]
    if c.command_set:
        lines.append(f" Command:\t{' '.join(c.command)}")
    if c.args:
        lines.append(f" Args:\t\t{' '.join(c.args)} ")
    if c.env:
        lines.append(f" Env:\t\t{' '.join(c.env)}")
    if c.dir:
        lines.append(f" Dir:\t\t{c.dir}")
    if c.user:
        lines.append(f" User: {c.user}")
    lines.append(" Init:\t\tfalse")
    if c.mounts:
        lines.append("Mounts:")
        for m in c.mounts:
            lines += [f" Target:\t{m.target}", f"  Source:\t{m.source}"]
            lines += [f"  ReadOnly:\t{str(m.read_only).lower()}", f"  Type:\t\t{m.type}"]
    for kind, refs in (("Secrets", c.secrets), ("Configs", c.configs)):
        if refs:
            lines.append(f"{kind}:")
            lines += [f" Target:\t{r.target}\n  Source:\t{r.name}" for r in refs]
    limits, reservations = task.resources.limits, task.resources.reservations
    if _resources(limits) or _resources(reservations):
        lines.append("Resources:")
        for title, r in (("Reservations", reservations), ("Limits", limits)):
            if _resources(r):
                lines.append(f" {title}:")
                if r.nano_cpus:
                    lines.append(f"  CPU:\t\t{r.nano_cpus / NANO:g}")
                if r.memory_bytes:
                    lines.append(f"  Memory:\t{output.bytes_size(r.memory_bytes)}")
                if r.pids:
                    lines.append(f"  PIDs:\t\t{r.pids}")
    if task.networks:
        lines.append(f"Networks:\t{' '.join(n.target for n in task.networks)} ")
    lines.append(f"Endpoint Mode:\t{spec.endpoint.mode or 'vip'}")
    ports = s.endpoint.ports or spec.endpoint.ports
    if ports:
        lines.append("Ports:")
        for p in ports:
            lines += [
                f" PublishedPort = {p.published_port}",
                f"  Protocol = {p.protocol or 'tcp'}",
                f"  TargetPort = {p.target_port}",
                f"  PublishMode = {p.publish_mode or 'ingress'}",
            ]
    if c.HasField("healthcheck") and c.healthcheck.test:
        h = c.healthcheck
        lines += ["Healthcheck:", f" Interval = {go_duration(h.interval)}"]
        lines += [f" Retries = {h.retries}", f" StartPeriod = {go_duration(h.start_period)}"]
        lines += [f" Timeout = {go_duration(h.timeout)}"]
        lines.append(f" Tests:\n\t Test = {' '.join(h.test)}")
    return "\n".join(lines)

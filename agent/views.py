"""Docker-shaped views of engine objects: `ps` rows, `inspect` documents, volumes."""

from __future__ import annotations

import json
import shlex
import time
from datetime import UTC, datetime
from typing import Any

from api import engine_pb2
from api.units import human_duration

from .containers.record import ContainerRecord, State


def rfc3339(ts: float) -> str:
    if not ts:
        return "0001-01-01T00:00:00Z"
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


def status_text(record: ContainerRecord, *, now: float | None = None) -> str:
    now = now or time.time()
    if record.state == State.RUNNING:
        return f"Up {human_duration(now - record.started_at)}"
    if record.state == State.RESTARTING:
        return f"Restarting ({record.exit_code}) {human_duration(now - record.finished_at)} ago"
    if record.state == State.EXITED or record.finished_at:
        return f"Exited ({record.exit_code}) {human_duration(now - record.finished_at)} ago"
    return "Created"


def ports_text(record: ContainerRecord) -> str:
    if record.state != State.RUNNING:
        return ""
    out = []
    for p in record.network.ports:
        ip = p.get("host_ip") or "0.0.0.0"
        out.append(f"{ip}:{p['host_port']}->{p['container_port']}/{p.get('protocol') or 'tcp'}")
    return ", ".join(out)


def container_summary(record: ContainerRecord) -> engine_pb2.ContainerSummary:
    return engine_pb2.ContainerSummary(
        id=record.id,
        name=record.name,
        image=record.image,
        command=shlex.join(record.args),
        created=int(record.created),
        state=record.state.value,
        status=status_text(record),
        ports=ports_text(record),
        labels=record.config.get("labels", {}),
    )


def container_inspect(record: ContainerRecord, image_config: dict[str, Any]) -> str:
    cfg = record.config
    res = cfg.get("resources", {})
    doc = {
        "Id": record.id,
        "Created": rfc3339(record.created),
        "Path": record.args[0] if record.args else "",
        "Args": record.args[1:],
        "State": {
            "Status": record.state.value,
            "Running": record.state == State.RUNNING,
            "Paused": False,
            "Restarting": record.state == State.RESTARTING,
            "OOMKilled": False,
            "Dead": record.state == State.DEAD,
            "Pid": record.pid,
            "ExitCode": record.exit_code,
            "Error": record.error,
            "StartedAt": rfc3339(record.started_at),
            "FinishedAt": rfc3339(record.finished_at),
        },
        "Image": record.image_id,
        "Name": "/" + record.name,
        "RestartCount": record.restart_count,
        "Driver": "overlay",
        "HostConfig": {
            "NetworkMode": cfg.get("network") or "bridge",
            "RestartPolicy": {
                "Name": cfg.get("restart", {}).get("name") or "no",
                "MaximumRetryCount": cfg.get("restart", {}).get("max_retries", 0),
            },
            "AutoRemove": bool(cfg.get("auto_remove")),
            "ReadonlyRootfs": bool(cfg.get("read_only")),
            "Memory": int(res.get("memory_bytes", 0)),
            "NanoCpus": int(res.get("nano_cpus", 0)),
            "PidsLimit": int(res.get("pids_limit", 0)) or None,
            "CapAdd": cfg.get("cap_add", []),
            "CapDrop": cfg.get("cap_drop", []),
        },
        "Mounts": [
            {
                "Type": m.get("type", "volume"),
                "Source": m.get("source", ""),
                "Destination": m.get("target", ""),
                "RW": not m.get("read_only", False),
            }
            for m in cfg.get("mounts", [])
        ]
        + [{"Type": "volume", "Name": v, "Anonymous": True} for v in record.anonymous_volumes],
        "Config": {
            "Hostname": cfg.get("hostname") or record.id[:12],
            "User": cfg.get("user", ""),
            "Env": cfg.get("env", []),
            "Cmd": cfg.get("cmd") or (image_config.get("config") or {}).get("Cmd"),
            "Image": record.image,
            "WorkingDir": cfg.get("workdir", ""),
            "Entrypoint": cfg.get("entrypoint") or None,
            "Labels": cfg.get("labels", {}),
            "StopSignal": cfg.get("stop_signal") or None,
        },
        "NetworkSettings": {
            "IPAddress": record.network.ip_address,
            "Gateway": record.network.gateway,
            "SandboxKey": record.network.netns_path or "",
            "Ports": {
                f"{p['container_port']}/{p.get('protocol') or 'tcp'}": [
                    {"HostIp": p.get("host_ip") or "0.0.0.0", "HostPort": str(p["host_port"])}
                ]
                for p in record.network.ports
            },
        },
    }
    return json.dumps(doc)


def volume_message(volume: Any) -> engine_pb2.Volume:
    return engine_pb2.Volume(
        name=volume.name,
        driver=getattr(volume, "driver", "local"),
        mountpoint=str(volume.mountpoint),
        created=int(volume.created),
        labels=dict(volume.labels or {}),
    )


def visible_images(images: list[Any]) -> list[Any]:
    """`images` without intermediate ones, as docker lists them by default.

    An intermediate image is an untagged one that another image was built on: its
    history is a strict prefix of the other's (each build step is an image)."""

    def history(image: Any) -> list[Any]:
        entries: list[Any] = image.config.get("history") or []
        return entries

    histories = [history(i) for i in images]
    hidden = set()
    for image, mine in zip(images, histories, strict=True):
        if image.repo_tags or not mine:
            continue
        if any(len(other) > len(mine) and other[: len(mine)] == mine for other in histories):
            hidden.add(image.id)
    return [i for i in images if i.id not in hidden]

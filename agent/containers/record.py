"""What the engine knows about one container, kept on disk so a new daemon can adopt it.

`<data-root>/containers/<id>/container.json` is rewritten atomically (temp file +
rename) on every state change; nothing about a container lives only in memory.
The user's request (`config`) is stored as given and never mutated; the rest is
observed state.
"""

from __future__ import annotations

import enum
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from api import engine_pb2


class State(enum.StrEnum):
    CREATED = "created"
    RUNNING = "running"
    RESTARTING = "restarting"
    EXITED = "exited"
    DEAD = "dead"


@dataclass
class NetworkState:
    mode: str = "bridge"
    netns_path: str | None = None
    ip_address: str = ""
    gateway: str = ""
    ports: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ContainerRecord:
    id: str
    name: str
    image: str  # as the user gave it
    image_id: str
    config: dict[str, Any]  # api ContainerConfig as JSON, never mutated
    created: float
    path: str = ""  # argv[0] as resolved at create
    args: list[str] = field(default_factory=list)
    state: State = State.CREATED
    pid: int = 0
    conmon_pid: int = 0
    exit_code: int = 0
    error: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0
    restart_count: int = 0
    manually_stopped: bool = False
    anonymous_volumes: list[str] = field(default_factory=list)
    network: NetworkState = field(default_factory=NetworkState)

    @property
    def running(self) -> bool:
        return self.state in (State.RUNNING, State.RESTARTING)

    def spec(self) -> engine_pb2.ContainerConfig:
        msg = engine_pb2.ContainerConfig()
        json_format.ParseDict(self.config, msg)
        return msg

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContainerRecord:
        data = dict(data)
        data["state"] = State(data["state"])
        data["network"] = NetworkState(**data.get("network", {}))
        return cls(**data)

    def save(self, directory: Path) -> None:
        tmp = directory / "container.json.tmp"
        tmp.write_text(json.dumps(self.to_json(), indent=1))
        os.replace(tmp, directory / "container.json")

    @classmethod
    def load(cls, directory: Path) -> ContainerRecord:
        return cls.from_json(json.loads((directory / "container.json").read_text()))


def config_to_json(config: engine_pb2.ContainerConfig) -> dict[str, Any]:
    return json_format.MessageToDict(config, preserving_proto_field_name=True)


def port_to_json(p: engine_pb2.PortBinding) -> dict[str, Any]:
    return {
        "host_ip": p.host_ip,
        "host_port": p.host_port,
        "container_port": p.container_port,
        "protocol": p.protocol or "tcp",
    }

"""The node engine: images, volumes and containers of one host, under one data root.

Layout of `--data-root` (default /var/lib/pyswarm):
    image/        the image store (blobs, unpacked layers, references)
    containers/   one directory per container (record, bundle, writable layer, log)
    volumes/      local volumes
    runtime/      the OCI runtime's own state (`crun --root`)
    tmp/          spool files for uploads (import, load), emptied at start-up
"""

from __future__ import annotations

import json
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from api import engine_pb2

from . import hostprep
from .containers.engine import ContainerEngine
from .containers.network import NetworkDriver
from .containers.record import State
from .containers.runtime import Runtime
from .images.store import ImageStore
from .volumes import VolumeStore

VERSION = "0.1.0"
API_VERSION = "1.0"


@dataclass(frozen=True)
class EngineOptions:
    data_root: Path
    runtime: str = "crun"
    cgroup_parent: str = "/pyswarm"
    # Registries: plain HTTP is allowed for these (and for localhost/127.0.0.0/8);
    # unqualified names resolve to default_registry ("" = no remote pulls for them).
    insecure_registries: tuple[str, ...] = ()
    default_registry: str = "docker.io"
    # CA certificates (PEM) trusted for one registry (HOST:PORT), set at run time: the
    # swarm's managers serve a registry whose certificates the cluster CA signs.
    registry_cas: dict[str, bytes] = field(default_factory=dict)


class Engine:
    def __init__(self, options: EngineOptions, *, network: NetworkDriver) -> None:
        root = options.data_root
        self.options = options
        self.tmp = root / "tmp"
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.runtime = Runtime(options.runtime, state_root=root / "runtime" / options.runtime)
        self.images = ImageStore(root / "image")
        self.volumes = VolumeStore(root / "volumes")
        self.network = network
        self.containers = ContainerEngine(
            root / "containers",
            runtime=self.runtime,
            images=self.images,
            volumes=self.volumes,
            network=network,
            cgroup_parent=options.cgroup_parent,
        )

    def start(self) -> None:
        self.containers.restore()

    def close(self) -> None:
        self.containers.close()

    def version(self) -> engine_pb2.VersionInfo:
        return engine_pb2.VersionInfo(
            version=VERSION,
            api_version=API_VERSION,
            python=platform.python_version(),
            runtime=self.runtime.name,
            runtime_version=self.runtime.version(),
            os=platform.system().lower(),
            arch=platform.machine(),
        )

    def info(self) -> dict[str, Any]:
        records = self.containers.records(all=True)
        running = sum(r.state == State.RUNNING for r in records)
        return {
            "Containers": len(records),
            "ContainersRunning": running,
            "ContainersPaused": 0,
            "ContainersStopped": len(records) - running,
            "Images": len(self.images.list()),
            "ServerVersion": VERSION,
            "Driver": "overlay",
            "CgroupDriver": "cgroupfs",
            "CgroupVersion": "2" if hostprep.cgroup_mode() is hostprep.CgroupMode.V2 else "1",
            "CgroupMode": hostprep.cgroup_mode().value,
            "DefaultRuntime": self.runtime.name,
            "Runtimes": [self.runtime.name],
            "DockerRootDir": str(self.options.data_root),
            "KernelVersion": platform.release(),
            "OperatingSystem": _os_name(),
            "OSType": "linux",
            "Architecture": platform.machine(),
            "Name": platform.node(),
            "Swarm": {"LocalNodeState": "inactive"},
        }

    def info_json(self) -> str:
        return json.dumps(self.info())


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()

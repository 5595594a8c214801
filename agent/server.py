"""The engine's gRPC servicer: turns API calls into engine calls and errors into statuses.

Each method is thin: unpack the request, call one engine function, pack the reply.
`PyswarmError`s become gRPC statuses carrying the one-line message; the exit code a
`run` must end with (126/127) travels as trailing metadata `pyswarm-exit-code`.
Uploads (import, load) are spooled to a file under the data root's tmp/ first, so a
broken stream never leaves a half-written image.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import grpc

from api import engine_pb2, engine_pb2_grpc
from api.errors import InvalidArgument
from api.rpc import rpc

from .engine import Engine
from .images import archive
from .views import (
    container_inspect,
    container_summary,
    visible_images,
    volume_message,
)

log = logging.getLogger(__name__)
CHUNK = 1 << 20


def _spool(tmp: Path, chunks: Iterator[bytes]) -> IO[bytes]:
    f = tempfile.TemporaryFile(dir=tmp)  # noqa: SIM115 - returned, the caller closes it
    for data in chunks:
        f.write(data)
    f.seek(0)
    return f


class EngineServicer(engine_pb2_grpc.EngineServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.containers = engine.containers
        self.images = engine.images
        self.volumes = engine.volumes

    # ---- system --------------------------------------------------------------

    @rpc
    def Version(self, request: engine_pb2.Empty, context: grpc.ServicerContext) -> Any:
        return self.engine.version()

    @rpc
    def Info(self, request: engine_pb2.Empty, context: grpc.ServicerContext) -> Any:
        return engine_pb2.SystemInfo(json=self.engine.info_json())

    # ---- containers ----------------------------------------------------------

    @rpc
    def ContainerCreate(self, request: Any, context: grpc.ServicerContext) -> Any:
        cid, warnings = self.containers.create(request.config)
        return engine_pb2.ContainerCreateResponse(id=cid, warnings=warnings)

    @rpc
    def ContainerStart(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.containers.start(request.id)
        return engine_pb2.Empty()

    @rpc
    def ContainerStop(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.containers.stop(request.id, timeout=request.timeout)
        return engine_pb2.Empty()

    @rpc
    def ContainerRestart(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.containers.restart(request.id, timeout=request.timeout)
        return engine_pb2.Empty()

    @rpc
    def ContainerKill(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.containers.kill(request.id, signal=request.signal or "KILL")
        return engine_pb2.Empty()

    @rpc
    def ContainerRemove(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.containers.remove(request.id, force=request.force, volumes=request.volumes)
        return engine_pb2.Empty()

    @rpc
    def ContainerList(self, request: Any, context: grpc.ServicerContext) -> Any:
        records = self.containers.records(all=request.all)
        return engine_pb2.ContainerListResponse(containers=[container_summary(r) for r in records])

    @rpc
    def ContainerInspect(self, request: Any, context: grpc.ServicerContext) -> Any:
        record = self.containers.get(request.id)
        image = self.images.resolve(record.image_id)
        return engine_pb2.JsonDoc(json=container_inspect(record, image.config))

    @rpc
    def ContainerLogs(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        for rec in self.containers.logs(request, cancelled=lambda: not context.is_active()):
            yield engine_pb2.LogEntry(stream=rec.stream, time=rec.time, data=rec.data)

    @rpc
    def ContainerWait(self, request: Any, context: grpc.ServicerContext) -> Any:
        record = self.containers.wait_exit(request.id, timeout=0)
        while context.is_active():
            record = self.containers.wait_exit(record.id, timeout=1.0)
            if record.state.value != "running":
                break
        if record.config.get("auto_remove"):
            self.containers.wait_removed(record.id, timeout=30)
        return engine_pb2.WaitResponse(exit_code=record.exit_code, error=record.error)

    @rpc
    def ContainerExec(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        proc = self.containers.exec(request)
        yield from _stream_process(proc, context)

    @rpc
    def ContainerStats(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self.containers.stats(request.id)

    @rpc
    def ContainerPrune(self, request: Any, context: grpc.ServicerContext) -> Any:
        return engine_pb2.PruneResponse(deleted=self.containers.prune())

    # ---- images --------------------------------------------------------------

    @rpc
    def ImageList(self, request: Any, context: grpc.ServicerContext) -> Any:
        images = self.images.list()
        return engine_pb2.ImageListResponse(
            images=[
                engine_pb2.ImageSummary(
                    id=i.id, repo_tags=list(i.repo_tags), created=int(i.created), size=i.size
                )
                for i in (images if request.all else visible_images(images))
            ]
        )

    @rpc
    def ImageInspect(self, request: Any, context: grpc.ServicerContext) -> Any:
        return engine_pb2.JsonDoc(json=json.dumps(self.images.inspect(request.reference)))

    @rpc
    def ImageRemove(self, request: Any, context: grpc.ServicerContext) -> Any:
        res = self.images.remove(
            request.reference, force=request.force, users=self.containers.image_users
        )
        return engine_pb2.ImageRemoveResponse(untagged=res.untagged, deleted=res.deleted)

    @rpc
    def ImageTag(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.images.tag(request.source, request.target)
        return engine_pb2.Empty()

    @rpc
    def ImageImport(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:
        first = next(request_iterator, None)
        if first is None:
            raise InvalidArgument("empty import stream")

        def chunks() -> Iterator[bytes]:
            yield first.data
            for req in request_iterator:
                yield req.data

        with _spool(self.engine.tmp, chunks()) as f:
            image = self.images.import_rootfs(
                f,
                first.reference or None,
                changes=list(first.changes),
                message=first.message,
            )
        return engine_pb2.ImageRef(id=image.id, reference=first.reference)

    @rpc
    def ImageSave(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        with tempfile.TemporaryFile(dir=self.engine.tmp) as f:
            archive.save(self.images, list(request.references), f)
            f.seek(0)
            while data := f.read(CHUNK):
                yield engine_pb2.Chunk(data=data)

    @rpc
    def ImageLoad(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:
        with _spool(self.engine.tmp, (r.data for r in request_iterator)) as f:
            loaded = archive.load(self.images, f)
        return engine_pb2.ImageLoadResponse(loaded=loaded)

    @rpc
    def ImagePrune(self, request: Any, context: grpc.ServicerContext) -> Any:
        deleted, reclaimed = self.images.prune(all=request.all, users=self.containers.image_users)
        return engine_pb2.PruneResponse(deleted=deleted, space_reclaimed=reclaimed)

    # ---- registries and build (issue 3: agent/registry, agent/build) ---------

    @rpc
    def ImagePull(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        from .registry import service

        yield from service.pull(self.engine, request, cancelled=lambda: not context.is_active())

    @rpc
    def ImagePush(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        from .registry import service

        yield from service.push(self.engine, request, cancelled=lambda: not context.is_active())

    @rpc
    def Login(self, request: Any, context: grpc.ServicerContext) -> Any:
        from .registry import service

        return service.login(self.engine, request)

    @rpc
    def ImageBuild(self, request_iterator: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        from .build import service

        first = next(request_iterator, None)
        if first is None:
            raise InvalidArgument("empty build request")

        def chunks() -> Iterator[bytes]:
            yield first.context
            for req in request_iterator:
                yield req.context

        with _spool(self.engine.tmp, chunks()) as context_tar:
            yield from service.build(
                self.engine,
                first.options,
                context_tar,
                cancelled=lambda: not context.is_active(),
            )

    # ---- volumes -------------------------------------------------------------

    @rpc
    def VolumeCreate(self, request: Any, context: grpc.ServicerContext) -> Any:
        return volume_message(
            self.volumes.create(request.name or None, labels=dict(request.labels))
        )

    @rpc
    def VolumeList(self, request: Any, context: grpc.ServicerContext) -> Any:
        return engine_pb2.VolumeListResponse(
            volumes=[volume_message(v) for v in self.volumes.list()]
        )

    @rpc
    def VolumeInspect(self, request: Any, context: grpc.ServicerContext) -> Any:
        return volume_message(self.volumes.get(request.name))

    @rpc
    def VolumeRemove(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.volumes.remove(request.name, force=request.force, users=self.containers.volume_users)
        return engine_pb2.Empty()

    @rpc
    def VolumePrune(self, request: Any, context: grpc.ServicerContext) -> Any:
        names, reclaimed = self.volumes.prune(users=self.containers.volume_users)
        return engine_pb2.PruneResponse(deleted=names, space_reclaimed=reclaimed)


def _stream_process(
    proc: subprocess.Popen[bytes], context: grpc.ServicerContext
) -> Iterator[engine_pb2.ExecOutput]:
    """Interleave a process's stdout and stderr as they come, then its exit code."""
    out: queue.Queue[tuple[str, bytes]] = queue.Queue()

    def pump(name: str, pipe: IO[bytes]) -> None:
        with contextlib.closing(pipe):
            while data := pipe.read1(65536):  # type: ignore[attr-defined]
                out.put((name, data))
        out.put((name, b""))

    assert proc.stdout is not None and proc.stderr is not None
    threads = [
        threading.Thread(target=pump, args=("stdout", proc.stdout), daemon=True),
        threading.Thread(target=pump, args=("stderr", proc.stderr), daemon=True),
    ]
    for t in threads:
        t.start()
    open_streams = 2
    try:
        while open_streams:
            name, data = out.get()
            if not data:
                open_streams -= 1
                continue
            yield engine_pb2.ExecOutput(stream=name, data=data)
        code = proc.wait()
        yield engine_pb2.ExecOutput(stream="exit", exit_code=code)
    finally:
        if proc.poll() is None and not context.is_active():
            proc.kill()
            proc.wait()

"""The client side of the engine API: one gRPC channel to the daemon, typed calls, and
the mapping of every failure onto what the user sees.

grpc and the generated `api.engine_pb2*` modules take ~100 ms to import, so they are
imported inside functions here and nowhere else in the client: `pyswarm --help`, usage
errors and a missing daemon never pay for them.

Calls raise `CliError`s, never `grpc.RpcError`: `CannotConnect` when the socket is
missing or refuses connections, `DaemonError` ("Error response from daemon: <details>")
for a gRPC status from the daemon. `exit_codes(125)` gives them docker run's codes:
125, or the daemon's `pyswarm-exit-code` trailing metadata (126, 127).

    with connect(host) as engine:
        for summary in engine.container_list(all=True): ...
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import IO, TYPE_CHECKING, NamedTuple, Self, TypeVar

import click

from cli.main import CommandFailure
from cli.parse import MountSpec, PortSpec, RestartSpec

if TYPE_CHECKING:
    import grpc

    from api import engine_pb2 as pb
    from api.engine_pb2_grpc import EngineStub

Req = TypeVar("Req")
Resp = TypeVar("Resp")

CHUNK_SIZE = 1 << 20
EXIT_CODE_KEY = "pyswarm-exit-code"
RUN_FAILED = 125
MAX_MESSAGE = 64 << 20
# How grpc words a socket nobody listens on; the daemon's own UNAVAILABLE says more.
_CONNECT_FAILURES = ("failed to connect to all addresses", "Connection refused")


class CliError(CommandFailure):
    """A failure shown as one line on stderr, with docker's exit code; no traceback."""

    def show(self) -> None:
        click.echo(self.message, err=True)


class CannotConnect(CliError):
    def __init__(self, host: str) -> None:
        super().__init__(f"Cannot connect to the pyswarm daemon at {host}. Is the daemon running?")


class DaemonError(CliError):
    """A gRPC status from the daemon; `hinted_exit_code` is its pyswarm-exit-code."""

    def __init__(self, details: str, *, status: str, hinted_exit_code: int | None) -> None:
        super().__init__(f"Error response from daemon: {details}")
        self.details = details
        self.status = status
        self.hinted_exit_code = hinted_exit_code


@contextmanager
def exit_codes(failure: int) -> Iterator[None]:
    """docker run's and exec's exit codes: `failure` (125 for run) when the client or
    the daemon fails, or the code the daemon hints (126, 127) for the command."""
    try:
        yield
    except DaemonError as e:
        e.exit_code = e.hinted_exit_code or failure
        raise
    except CliError as e:
        e.exit_code = failure
        raise


def grpc_target(host: str) -> tuple[str, str | None]:
    """`unix:///path` -> (grpc target, socket path); `tcp://h:p` -> ("h:p", None)."""
    if host.startswith("unix://") and host.removeprefix("unix://").startswith("/"):
        return host, host.removeprefix("unix://")
    if host.startswith("tcp://") and ":" in host.removeprefix("tcp://"):
        return host.removeprefix("tcp://"), None
    raise CliError(f"invalid host: '{host}' (use unix:///path/to/socket or tcp://host:port)")


def open_channel(host: str) -> grpc.Channel:
    """A channel to the daemon at `host` (connecting lazily, on the first call)."""
    target, path = grpc_target(host)
    if path is not None and not os.path.exists(path):
        raise CannotConnect(host)
    import grpc

    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
        ("grpc.enable_http_proxy", 0),  # $http_proxy must not capture the local daemon
    ]
    return grpc.insecure_channel(target, options=options)


def connect(host: str) -> Engine:
    """The engine API of the daemon at `host`."""
    from api.engine_pb2_grpc import EngineStub

    channel = open_channel(host)
    return Engine(host, channel, EngineStub(channel))


def exit_code_hint(metadata: Iterable[tuple[str, str | bytes]] | None) -> int | None:
    for key, value in metadata or ():
        if key == EXIT_CODE_KEY:
            text = value.decode() if isinstance(value, bytes) else value
            return int(text) if text.strip().isdigit() else None
    return None


def daemon_error(host: str, err: grpc.RpcError) -> CliError:
    """The `CliError` for a failed call: the daemon's message, or a missing daemon."""
    import grpc

    if not isinstance(err, grpc.Call):
        return DaemonError(str(err), status="UNKNOWN", hinted_exit_code=None)
    code, details = err.code(), err.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE and any(f in details for f in _CONNECT_FAILURES):
        if "Permission denied" in details:
            return CliError(
                f"permission denied while trying to connect to the pyswarm daemon at {host}"
            )
        return CannotConnect(host)
    hint = exit_code_hint(err.trailing_metadata())
    one_line = " ".join(details.split("\n")).strip() or code.name
    return DaemonError(one_line, status=code.name, hinted_exit_code=hint)


class ContainerSpec(NamedTuple):
    """A container as `run`/`create` flags describe it, before it becomes a proto."""

    image: str
    cmd: tuple[str, ...] = ()
    name: str = ""
    entrypoint: str | None = None  # None: the image's; "": none
    env: tuple[str, ...] = ()
    workdir: str = ""
    user: str = ""
    hostname: str = ""
    mounts: tuple[MountSpec, ...] = ()
    read_only: bool = False
    memory_bytes: int = 0
    nano_cpus: int = 0
    pids_limit: int = 0
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    restart: RestartSpec = RestartSpec()
    stop_signal: str = ""
    stop_timeout: int = -1
    network: str = "bridge"
    ports: tuple[PortSpec, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    auto_remove: bool = False


def build_container_config(spec: ContainerSpec) -> pb.ContainerConfig:
    """The `ContainerConfig` for `spec` (pure: builds a message, calls nothing)."""
    from api import engine_pb2 as pb

    return pb.ContainerConfig(
        name=spec.name,
        image=spec.image,
        cmd=spec.cmd,
        entrypoint=[spec.entrypoint] if spec.entrypoint else [],
        entrypoint_set=spec.entrypoint is not None,
        env=spec.env,
        workdir=spec.workdir,
        user=spec.user,
        hostname=spec.hostname,
        mounts=[build_mount(m) for m in spec.mounts],
        read_only=spec.read_only,
        resources=pb.Resources(
            memory_bytes=spec.memory_bytes, nano_cpus=spec.nano_cpus, pids_limit=spec.pids_limit
        ),
        cap_add=spec.cap_add,
        cap_drop=spec.cap_drop,
        restart=pb.RestartPolicy(name=spec.restart.name, max_retries=spec.restart.max_retries),
        stop_signal=spec.stop_signal,
        stop_timeout=spec.stop_timeout,
        network=spec.network,
        ports=[build_port(p) for p in spec.ports],
        labels=dict(spec.labels),
        auto_remove=spec.auto_remove,
    )


def build_mount(mount: MountSpec) -> pb.Mount:
    from api import engine_pb2 as pb

    return pb.Mount(
        type=mount.type,
        source=mount.source,
        target=mount.target,
        read_only=mount.read_only,
        tmpfs_size=mount.tmpfs_size,
        tmpfs_mode=mount.tmpfs_mode,
    )


def build_port(port: PortSpec) -> pb.PortBinding:
    from api import engine_pb2 as pb

    return pb.PortBinding(
        host_ip=port.host_ip,
        host_port=port.host_port,
        container_port=port.container_port,
        protocol=port.protocol,
    )


class Chunks:
    """A binary file read in 1 MiB chunks; a read error ends the stream and is kept,
    since an exception inside a gRPC request iterator only cancels the call."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.error: OSError | None = None

    def __iter__(self) -> Iterator[bytes]:
        try:
            while data := self.file.read(CHUNK_SIZE):
                yield data
        except OSError as e:
            self.error = e

    def check(self) -> None:
        if self.error is not None:
            raise CliError(f"read error: {self.error.strerror or self.error}")


class DaemonClient:
    """One channel to a daemon; calls through `_call` map failures onto `CliError`s."""

    def __init__(self, host: str, channel: grpc.Channel) -> None:
        self.host = host
        self._channel = channel

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._channel.close()

    def _call(self, rpc: Callable[[Req], Resp], request: Req) -> Resp:
        import grpc

        try:
            return rpc(request)
        except grpc.RpcError as err:
            raise daemon_error(self.host, err) from None


class Engine(DaemonClient):
    """The engine API of one daemon, one method per RPC, in plain Python terms."""

    def __init__(self, host: str, channel: grpc.Channel, stub: EngineStub) -> None:
        super().__init__(host, channel)
        self._stub = stub

    def _stream(self, rpc: Callable[[Req], Iterator[Resp]], request: Req) -> Iterator[Resp]:
        import grpc

        try:
            yield from rpc(request)
        except grpc.RpcError as err:
            raise daemon_error(self.host, err) from None

    # ---- system ----

    def version(self) -> pb.VersionInfo:
        from api import engine_pb2 as pb

        return self._call(self._stub.Version, pb.Empty())

    def info(self) -> str:
        from api import engine_pb2 as pb

        return self._call(self._stub.Info, pb.Empty()).json

    # ---- containers ----

    def container_create(self, spec: ContainerSpec) -> pb.ContainerCreateResponse:
        from api import engine_pb2 as pb

        request = pb.ContainerCreateRequest(config=build_container_config(spec))
        return self._call(self._stub.ContainerCreate, request)

    def container_start(self, cid: str) -> None:
        from api import engine_pb2 as pb

        self._call(self._stub.ContainerStart, pb.ContainerRef(id=cid))

    def container_stop(self, cid: str, *, timeout: int) -> None:
        from api import engine_pb2 as pb

        self._call(self._stub.ContainerStop, pb.ContainerStopRequest(id=cid, timeout=timeout))

    def container_restart(self, cid: str, *, timeout: int) -> None:
        from api import engine_pb2 as pb

        self._call(self._stub.ContainerRestart, pb.ContainerStopRequest(id=cid, timeout=timeout))

    def container_kill(self, cid: str, *, signal: str) -> None:
        from api import engine_pb2 as pb

        self._call(self._stub.ContainerKill, pb.ContainerKillRequest(id=cid, signal=signal))

    def container_remove(self, cid: str, *, force: bool, volumes: bool) -> None:
        from api import engine_pb2 as pb

        request = pb.ContainerRemoveRequest(id=cid, force=force, volumes=volumes)
        self._call(self._stub.ContainerRemove, request)

    def container_list(self, *, all: bool) -> list[pb.ContainerSummary]:
        from api import engine_pb2 as pb

        return list(
            self._call(self._stub.ContainerList, pb.ContainerListRequest(all=all)).containers
        )

    def container_inspect(self, cid: str) -> str:
        from api import engine_pb2 as pb

        return self._call(self._stub.ContainerInspect, pb.ContainerRef(id=cid)).json

    def container_logs(
        self, cid: str, *, follow: bool, tail: int, since: float
    ) -> Iterator[pb.LogEntry]:
        from api import engine_pb2 as pb

        request = pb.LogsRequest(
            id=cid, follow=follow, tail=tail, since=since, stdout=True, stderr=True
        )
        return self._stream(self._stub.ContainerLogs, request)

    def container_wait(self, cid: str) -> pb.WaitResponse:
        from api import engine_pb2 as pb

        return self._call(self._stub.ContainerWait, pb.ContainerRef(id=cid))

    def container_exec(
        self, cid: str, cmd: Iterable[str], *, env: Iterable[str], workdir: str, user: str
    ) -> Iterator[pb.ExecOutput]:
        from api import engine_pb2 as pb

        request = pb.ExecRequest(id=cid, cmd=cmd, env=env, workdir=workdir, user=user)
        return self._stream(self._stub.ContainerExec, request)

    def container_stats(self, cid: str) -> pb.Stats:
        from api import engine_pb2 as pb

        return self._call(self._stub.ContainerStats, pb.ContainerRef(id=cid))

    def container_prune(self) -> pb.PruneResponse:
        from api import engine_pb2 as pb

        return self._call(self._stub.ContainerPrune, pb.Empty())

    # ---- images ----

    def image_list(self, *, all: bool = False) -> list[pb.ImageSummary]:
        from api import engine_pb2 as pb

        return list(self._call(self._stub.ImageList, pb.ImageListRequest(all=all)).images)

    def image_inspect(self, reference: str) -> str:
        from api import engine_pb2 as pb

        return self._call(self._stub.ImageInspect, pb.ImageRef(reference=reference)).json

    def image_remove(self, reference: str, *, force: bool) -> pb.ImageRemoveResponse:
        from api import engine_pb2 as pb

        request = pb.ImageRemoveRequest(reference=reference, force=force)
        return self._call(self._stub.ImageRemove, request)

    def image_tag(self, source: str, target: str) -> None:
        from api import engine_pb2 as pb

        self._call(self._stub.ImageTag, pb.ImageTagRequest(source=source, target=target))

    def image_import(
        self, reference: str, data: Chunks, *, changes: Iterable[str], message: str
    ) -> str:
        """Stream a root filesystem tarball; the first message carries the reference."""
        first = import_header(reference, changes=list(changes), message=message)

        def requests() -> Iterator[pb.ImageImportRequest]:
            from api import engine_pb2 as pb

            yield first
            for chunk in data:
                yield pb.ImageImportRequest(data=chunk)

        image_id = self._call(self._stub.ImageImport, requests()).id
        data.check()
        return image_id

    def image_save(self, references: Iterable[str]) -> Iterator[bytes]:
        from api import engine_pb2 as pb

        request = pb.ImageSaveRequest(references=references)
        return (chunk.data for chunk in self._stream(self._stub.ImageSave, request))

    def image_load(self, data: Chunks) -> list[str]:
        from api import engine_pb2 as pb

        requests = (pb.Chunk(data=chunk) for chunk in data)
        loaded = list(self._call(self._stub.ImageLoad, requests).loaded)
        data.check()
        return loaded

    def image_prune(self, *, all: bool) -> pb.PruneResponse:
        from api import engine_pb2 as pb

        return self._call(self._stub.ImagePrune, pb.ImagePruneRequest(all=all))

    # ---- volumes ----

    def volume_create(self, name: str, *, labels: dict[str, str]) -> pb.Volume:
        from api import engine_pb2 as pb

        request = pb.VolumeCreateRequest(name=name, labels=labels)
        return self._call(self._stub.VolumeCreate, request)

    def volume_list(self) -> list[pb.Volume]:
        from api import engine_pb2 as pb

        return list(self._call(self._stub.VolumeList, pb.Empty()).volumes)

    def volume_inspect(self, name: str) -> pb.Volume:
        from api import engine_pb2 as pb

        return self._call(self._stub.VolumeInspect, pb.VolumeRef(name=name))

    def volume_remove(self, name: str, *, force: bool) -> None:
        from api import engine_pb2 as pb

        self._call(self._stub.VolumeRemove, pb.VolumeRef(name=name, force=force))

    def volume_prune(self) -> pb.PruneResponse:
        from api import engine_pb2 as pb

        return self._call(self._stub.VolumePrune, pb.Empty())

    # ---- build ----

    def image_build(
        self,
        data: Chunks,
        *,
        tags: Iterable[str],
        dockerfile: str,
        build_args: dict[str, str],
        target: str,
        no_cache: bool,
        pull: bool,
        labels: dict[str, str],
        quiet: bool,
    ) -> Iterator[pb.Progress]:
        """Stream the context tar (the first message carries the options, later ones
        1 MiB of context each); yield the daemon's Progress messages as they come."""
        from api import engine_pb2 as pb

        options = pb.BuildOptions(
            tags=list(tags), dockerfile=dockerfile, build_args=build_args, target=target,
            no_cache=no_cache, pull=pull, labels=labels, quiet=quiet,
        )  # fmt: skip

        def requests() -> Iterator[pb.ImageBuildRequest]:
            yield pb.ImageBuildRequest(options=options)
            for chunk in data:
                yield pb.ImageBuildRequest(context=chunk)

        yield from self._stream(self._stub.ImageBuild, requests())
        data.check()

    # ---- registries ----

    def image_pull(self, reference: str, *, auth: RegistryLogin | None) -> Iterator[pb.Progress]:
        from api import engine_pb2 as pb

        request = pb.ImagePullRequest(reference=reference, auth=registry_auth(auth))
        return self._stream(self._stub.ImagePull, request)

    def image_push(self, reference: str, *, auth: RegistryLogin | None) -> Iterator[pb.Progress]:
        from api import engine_pb2 as pb

        request = pb.ImagePushRequest(reference=reference, auth=registry_auth(auth))
        return self._stream(self._stub.ImagePush, request)

    def login(self, auth: RegistryLogin) -> pb.LoginResponse:
        from api import engine_pb2 as pb

        return self._call(self._stub.Login, pb.LoginRequest(auth=registry_auth(auth)))


def import_header(reference: str, *, changes: list[str], message: str) -> pb.ImageImportRequest:
    """The first ImageImportRequest: the reference, --change and --message, no data."""
    from api import engine_pb2 as pb

    return pb.ImageImportRequest(reference=reference, changes=changes, message=message)


class RegistryLogin(NamedTuple):
    server: str
    username: str
    password: str


def registry_auth(auth: RegistryLogin | None) -> pb.RegistryAuth:
    from api import engine_pb2 as pb

    if auth is None:
        return pb.RegistryAuth()
    return pb.RegistryAuth(server=auth.server, username=auth.username, password=auth.password)

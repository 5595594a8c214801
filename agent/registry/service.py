"""pull, push and login for the engine's servicer: registry transfers into and out of
the image store, reported as a stream of `Progress` messages.

Pull: resolve the reference to a registry and repository, fetch the manifest (choosing
the host's platform from an index), the config (verified), then the layers on a small
thread pool, each streamed through a `Lease` into the blob store (verified against its
digest, so nothing partial or wrong stays) and unpacked; finally `add_image` records
the image with the manifest verbatim, so its digest is the registry's. Push reads the
stored manifest, HEADs each blob (skipping what the registry has), mounts from another
repository of the same registry when the image is tagged there, uploads the rest, then
PUTs the manifest by tag. Layer transfers run 3 at a time; their progress comes back
through one queue, so the generator the servicer iterates is the only thing that
yields.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import queue
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import httpx

from api import engine_pb2
from api.errors import EngineFailure, InvalidArgument, NotFound, PyswarmError, Unavailable

from ..engine import Engine
from ..images import oci
from ..images.blobs import CHUNK, Descriptor, Digest
from ..images.lease import Lease
from ..images.reference import Reference, parse_reference
from ..images.store import ImageStore
from .auth import Credentials, Unauthorized
from .client import DOCKER_HUB, Endpoint, FetchedManifest, RegistryClient

PARALLEL_TRANSFERS = 3
PROGRESS_STEP = 512 << 10  # report a transfer's progress at most every 512 KiB
Cancelled = Callable[[], bool]
Progress = Any  # engine_pb2.Progress (generated, untyped)


@dataclass(frozen=True)
class Target:
    """A reference as a registry sees it: `docker.io` + `library/busybox`."""

    registry: str
    repository: str

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"


def target_of(ref: Reference, *, default_registry: str, verb: str = "pull") -> Target:
    """Where `ref` lives; unqualified names go to the daemon's default registry."""
    if ref.registry:
        return Target(ref.registry, ref.repository)
    if not default_registry:
        raise NotFound(
            f"{verb} access denied for {ref.name}: remote pulls of unqualified names are "
            "turned off (daemon --default-registry)"
        )
    repository = ref.repository if "/" in ref.repository else f"library/{ref.repository}"
    return Target(default_registry, repository)


def credentials_of(auth: Any, *, registry: str) -> Credentials | None:
    """The credentials sent for `registry`; never those of another registry (the
    client sends its Docker Hub login for unqualified names, which may go elsewhere)."""
    if auth is None or not (auth.username or auth.password):
        return None
    if auth.server not in ("", registry):
        return None
    return Credentials(username=auth.username, password=auth.password)


@contextlib.contextmanager
def network_errors(registry: str) -> Iterator[None]:
    """A broken connection or a full disk mid-transfer as one line naming the registry
    (the servicer maps api errors only)."""
    try:
        yield
    except httpx.HTTPError as error:
        raise Unavailable(f"registry {registry}: {error or type(error).__name__}") from None
    except OSError as error:
        raise EngineFailure(f"transfer from {registry} failed: {error}") from None


def open_client(engine: Engine, target: Target, auth: Any, *, push: bool) -> RegistryClient:
    endpoint = Endpoint.of(target.registry, insecure=engine.options.insecure_registries)
    credentials = credentials_of(auth, registry=target.registry)
    return RegistryClient(
        endpoint,
        target.repository,
        credentials=credentials,
        push=push,
        ca_pem=engine.options.registry_cas.get(target.registry),
    )


# ---- progress from worker threads ---------------------------------------------------


class _Stopped(PyswarmError):
    """Raised inside a transfer when the operation is cancelled or another one failed."""

    status = grpc.StatusCode.CANCELLED

    def __init__(self) -> None:
        super().__init__("cancelled")


class Transfers:
    """Runs one job per layer on a small pool; jobs `report` progress, `run` yields it."""

    def __init__(self, *, cancelled: Cancelled) -> None:
        self._cancelled = cancelled
        self._queue: queue.Queue[Progress | None] = queue.Queue()
        self._stop = threading.Event()

    def report(self, layer: str, status: str, *, current: int = 0, total: int = 0) -> None:
        if self._stop.is_set():
            raise _Stopped()
        self._queue.put(engine_pb2.Progress(id=layer, status=status, current=current, total=total))

    def counter(self, layer: str, status: str, total: int) -> Callable[[int], None]:
        """A callback for byte counts that reports every PROGRESS_STEP."""
        last = [-PROGRESS_STEP]

        def update(done: int) -> None:
            if done - last[0] >= PROGRESS_STEP or done == total:
                last[0] = done
                self.report(layer, status, current=done, total=total)
            elif self._stop.is_set():
                raise _Stopped()

        return update

    def run(self, jobs: Sequence[Callable[[], None]]) -> Iterator[Progress]:
        """Run the jobs, yielding their progress; the first failure is raised once
        every job has stopped."""
        with concurrent.futures.ThreadPoolExecutor(PARALLEL_TRANSFERS) as pool:
            try:
                futures = [pool.submit(self._job, job) for job in jobs]
                yield from self._drain(len(futures))
            finally:
                self._stop.set()  # an early exit (a client gone) stops the others too
        for future in futures:
            error = future.exception()
            if error is not None and not isinstance(error, _Stopped):
                raise error
        if self._cancelled():
            raise _Stopped()

    def _job(self, job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException:
            self._stop.set()
            raise
        finally:
            self._queue.put(None)

    def _drain(self, count: int) -> Iterator[Progress]:
        finished = 0
        while finished < count:
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                item = False
            if item is None:
                finished += 1
            elif item is not False:
                yield item
            if self._cancelled():
                self._stop.set()


class _Reader:
    """A `Readable` over an iterator of byte chunks (an httpx response)."""

    def __init__(self, chunks: Iterator[bytes], progress: Callable[[int], None]) -> None:
        self._chunks = chunks
        self._buffer = b""
        self._progress = progress
        self._count = 0

    def read(self, size: int = -1, /) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, b"")
            if not chunk:
                break
            self._count += len(chunk)
            self._progress(self._count)
            self._buffer += chunk
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


# ---- pull -------------------------------------------------------------------------


def pull(engine: Engine, request: Any, *, cancelled: Cancelled) -> Iterator[Progress]:
    """`docker pull`: the image `request.reference` names, into the store."""
    ref = parse_reference(request.reference)
    target = target_of(ref, default_registry=engine.options.default_registry)
    reference = ref.digest or ref.tag or "latest"
    with (
        network_errors(target.registry),
        open_client(engine, target, request.auth, push=False) as client,
    ):
        client.ping()
        digest, manifest = _fetch_image_manifest(client, reference)
        yield engine_pb2.Progress(id=reference, status=f"Pulling from {target.repository}")
        local = None if ref.digest else str(ref)
        previous = _image_id(engine.images, local)
        image_id = yield from _pull_image(engine.images, client, manifest, local, cancelled)
    yield engine_pb2.Progress(status=f"Digest: {digest}")
    shown = str(ref) if ref.digest else f"{ref.name}:{ref.tag}"
    news = "Image is up to date" if previous == image_id else "Downloaded newer image"
    yield engine_pb2.Progress(status=f"Status: {news} for {shown}", digest=digest)


def _image_id(store: ImageStore, reference: str | None) -> str | None:
    if reference is None:
        return None
    try:
        return store.resolve(reference).id
    except NotFound:
        return None


def _fetch_image_manifest(client: RegistryClient, reference: str) -> tuple[Digest, FetchedManifest]:
    """The digest `reference` names (an index's, if it is one) and the image manifest:
    from an index, the one for the host's platform."""
    top = fetched = client.get_manifest(reference)
    if _media_type(fetched) in oci.INDEX_TYPES:
        entry = choose_platform(oci.parse_index(fetched.data))
        fetched = client.get_manifest(entry.descriptor.digest)
    return top.digest, fetched


def _media_type(fetched: FetchedManifest) -> str:
    """The document's own mediaType, else the Content-Type if it is one we know, else
    a guess from its shape (an index has `manifests`)."""
    document = oci.loads_object(fetched.data, what="manifest")
    kind = document.get("mediaType")
    if isinstance(kind, str) and kind:
        return kind
    if fetched.media_type in _KNOWN_TYPES:
        return fetched.media_type
    if "manifests" in document:
        return oci.MediaType.OCI_INDEX.value
    return oci.MediaType.OCI_MANIFEST.value


_KNOWN_TYPES = oci.MANIFEST_TYPES | oci.INDEX_TYPES


def choose_platform(
    entries: Sequence[oci.IndexEntry], *, wanted: oci.Platform | None = None
) -> oci.IndexEntry:
    """The index entry for `wanted` (the host's platform): linux/<arch>, any variant."""
    wanted = wanted or oci.host_platform()
    for entry in entries:
        found = entry.platform
        if (
            found is not None
            and entry.media_type in oci.MANIFEST_TYPES | {""}
            and found.os == wanted.os
            and found.architecture == wanted.architecture
            and (not wanted.variant or found.variant == wanted.variant)
        ):
            return entry
    raise NotFound(
        f"no matching manifest for {wanted.os}/{wanted.architecture} in the manifest list entries"
    )


def _pull_image(
    store: ImageStore,
    client: RegistryClient,
    fetched: FetchedManifest,
    reference: str | None,
    cancelled: Cancelled,
) -> Generator[Progress, None, Digest]:
    manifest = oci.parse_manifest(fetched.data, media_type=_media_type(fetched))
    config = _config_bytes(store, client, manifest.config)
    diff_ids = oci.config_diff_ids(oci.loads_object(config, what="image config"))
    if len(diff_ids) != len(manifest.layers):
        raise InvalidArgument("image config and manifest disagree on the number of layers")
    layers = [(blob, diff_id) for (blob, _), diff_id in zip(manifest.layers, diff_ids, strict=True)]
    transfers = Transfers(cancelled=cancelled)
    with store.lease() as lease:
        jobs = []
        for blob, diff_id in layers:
            if _pin_existing(lease, blob):
                yield engine_pb2.Progress(id=short(blob.digest), status="Already exists")
                jobs.append(_unpack_job(store, lease, blob, diff_id, transfers, fetched=False))
                continue
            yield engine_pb2.Progress(id=short(blob.digest), status="Pulling fs layer")
            jobs.append(_download_job(store, client, lease, blob, diff_id, transfers))
        yield from transfers.run(jobs)
        image = store.add_image(config, layers=layers, reference=reference, manifest=fetched.data)
    return image.id


def _config_bytes(store: ImageStore, client: RegistryClient, config: Descriptor) -> bytes:
    if store.blobs.exists(config.digest):
        with contextlib.suppress(NotFound, InvalidArgument):
            return store.blobs.read_bytes(config.digest, max_size=oci.MAX_DOCUMENT_SIZE)
    return client.get_blob_bytes(config.digest, max_size=oci.MAX_DOCUMENT_SIZE)


def _pin_existing(lease: Lease, blob: Descriptor) -> bool:
    try:
        stored = lease.pin_blob(blob.digest)
    except InvalidArgument:  # not in the store
        return False
    return stored.size == blob.size


def _download_job(
    store: ImageStore,
    client: RegistryClient,
    lease: Lease,
    blob: Descriptor,
    diff_id: Digest,
    transfers: Transfers,
) -> Callable[[], None]:
    def job() -> None:
        layer = short(blob.digest)
        progress = transfers.counter(layer, "Downloading", blob.size)
        with client.open_blob(blob.digest) as response:
            reader = _Reader(response.iter_bytes(CHUNK), progress)
            lease.put_blob(reader, expected=blob.digest, max_size=blob.size)
        transfers.report(layer, "Download complete")
        _unpack_job(store, lease, blob, diff_id, transfers, fetched=True)()

    return job


def _unpack_job(
    store: ImageStore,
    lease: Lease,
    blob: Descriptor,
    diff_id: Digest,
    transfers: Transfers,
    *,
    fetched: bool,
) -> Callable[[], None]:
    def job() -> None:
        lease.pin_layer(diff_id)
        store.ensure_layers([(blob, diff_id)], blobs_verified=fetched)
        if fetched:
            transfers.report(short(blob.digest), "Pull complete")

    return job


# ---- push -------------------------------------------------------------------------


def push(engine: Engine, request: Any, *, cancelled: Cancelled) -> Iterator[Progress]:
    """`docker push`: the local image `request.reference` names, to its registry."""
    ref = parse_reference(request.reference)
    if ref.digest is not None:
        raise InvalidArgument("cannot push a digest reference")
    target = target_of(ref, default_registry=engine.options.default_registry, verb="push")
    store = engine.images
    try:
        image = store.resolve(str(ref))
    except NotFound:
        raise NotFound(f"An image does not exist locally with the tag: {ref.name}") from None
    yield engine_pb2.Progress(status=f"The push refers to repository [{target.name}]")
    with (
        network_errors(target.registry),
        store.lease() as lease,
        open_client(engine, target, request.auth, push=True) as client,
    ):
        for digest in (image.manifest_digest, image.id, *(la.digest for la in image.layers)):
            lease.pin_blob(digest)
        data = store.blobs.read_bytes(image.manifest_digest, max_size=oci.MAX_DOCUMENT_SIZE)
        manifest = oci.parse_manifest(data)
        client.ping()
        mount_from = _mount_source(image.repo_tags, ref)
        transfers = Transfers(cancelled=cancelled)
        jobs = []
        for blob, _ in reversed(manifest.layers):  # docker lists the top layer first
            yield engine_pb2.Progress(id=short(blob.digest), status="Preparing")
            jobs.append(_push_job(store, client, blob, transfers, mount_from=mount_from))
        yield from transfers.run(jobs)
        _push_blob(store, client, manifest.config, mount_from=mount_from)
        digest = client.put_manifest(ref.tag or "latest", data, media_type=manifest.media_type)
    yield engine_pb2.Progress(
        status=f"{ref.tag}: digest: {digest} size: {len(data)}", digest=digest
    )


def _mount_source(tags: Sequence[str], ref: Reference) -> str | None:
    """Another repository of the same registry this image is tagged in, if any."""
    for tag in tags:
        other = parse_reference(tag)
        if other.registry == ref.registry and ref.registry and other.repository != ref.repository:
            return other.repository
    return None


def _push_job(
    store: ImageStore,
    client: RegistryClient,
    blob: Descriptor,
    transfers: Transfers,
    *,
    mount_from: str | None,
) -> Callable[[], None]:
    def job() -> None:
        layer = short(blob.digest)
        if client.has_blob(blob.digest):
            transfers.report(layer, "Layer already exists")
            return
        progress = transfers.counter(layer, "Pushing", blob.size)
        with store.blobs.open_verified(blob.digest) as stream:
            mounted = client.upload_blob(
                blob.digest, stream, progress=progress, mount_from=mount_from
            )
        transfers.report(layer, f"Mounted from {mount_from}" if mounted else "Pushed")

    return job


def _push_blob(
    store: ImageStore, client: RegistryClient, blob: Descriptor, *, mount_from: str | None
) -> None:
    if not client.has_blob(blob.digest):
        with store.blobs.open_verified(blob.digest) as stream:
            client.upload_blob(blob.digest, stream, progress=lambda _: None, mount_from=mount_from)


# ---- login ------------------------------------------------------------------------


def login(engine: Engine, request: Any) -> Any:
    """Check credentials against the registry's /v2/ (Basic or the token flow)."""
    auth = request.auth
    registry = auth.server or engine.options.default_registry or DOCKER_HUB
    credentials = credentials_of(auth, registry=auth.server)
    if credentials is None:
        raise InvalidArgument("login needs a username and a password")
    endpoint = Endpoint.of(registry, insecure=engine.options.insecure_registries)
    with network_errors(registry), RegistryClient(endpoint, "", credentials=credentials) as client:
        try:
            client.ping()
        except Unauthorized:
            raise Unauthorized("unauthorized: incorrect username or password") from None
    return engine_pb2.LoginResponse(status="Login Succeeded")

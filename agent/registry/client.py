"""A synchronous client of the OCI distribution API (v2) for one repository, on httpx.

    with RegistryClient(Endpoint.of("127.0.0.1:5000", insecure=()), "test/app") as client:
        client.ping()
        manifest = client.get_manifest("1.0")
        with client.open_blob(manifest_layer_digest) as response: ...

`ping` GETs `/v2/` and so fixes the scheme: HTTPS always first; plain HTTP only for
registries the daemon lists as insecure and for loopback hosts, after HTTPS failed to
connect (as docker does). TLS is verified against the system CAs plus
`/etc/pyswarm/certs.d/<host:port>/*.crt` (docker's certs.d); insecure registries are not
verified. Every request goes through `_send`, which adds what the `Authorizer` knows
and, on a 401, learns the challenge (Basic, or a Bearer token) and retries once.
Errors are `api.errors` in docker's words; the registry's JSON error body
(`{"errors": [{"code": ..., "message": ...}]}`) supplies the detail.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from api.errors import InvalidArgument, NotFound, PyswarmError, Unavailable

from ..images import oci
from ..images.blobs import CHUNK, Digest, Readable
from .auth import Authorizer, Credentials, Unauthorized, scope_for

CERTS_DIR = Path("/etc/pyswarm/certs.d")
DOCKER_HUB = "docker.io"
DOCKER_HUB_HOST = "registry-1.docker.io"
TIMEOUT = httpx.Timeout(60.0, connect=10.0)
ACCEPT = ", ".join(
    (
        oci.MediaType.OCI_MANIFEST,
        oci.MediaType.DOCKER_MANIFEST,
        oci.MediaType.OCI_INDEX,
        oci.MediaType.DOCKER_MANIFEST_LIST,
    )
)


@dataclass(frozen=True)
class Endpoint:
    """Where a registry answers: `host` (host[:port]), the schemes to try, TLS checks."""

    registry: str  # as users name it: "docker.io", "127.0.0.1:5000"
    host: str
    schemes: tuple[str, ...]
    verify: bool

    @classmethod
    def of(cls, registry: str, *, insecure: tuple[str, ...]) -> Endpoint:
        host = DOCKER_HUB_HOST if registry == DOCKER_HUB else registry
        plain = registry in insecure or is_loopback(registry)
        return cls(
            registry=registry,
            host=host,
            schemes=("https", "http") if plain else ("https",),
            verify=registry not in insecure,
        )

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def is_loopback(registry: str) -> bool:
    """`localhost`, 127.0.0.0/8 or ::1, with or without a port."""
    host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    host = host.removeprefix("[").split("]")[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tls_context(
    registry: str, *, certs_dir: Path = CERTS_DIR, ca_pem: bytes | None = None
) -> ssl.SSLContext:
    """System CAs plus the registry's own CA certificates from certs.d, if any, and
    `ca_pem` (the swarm's CA for its managers' registries)."""
    context = ssl.create_default_context()
    if ca_pem:
        context.load_verify_locations(cadata=ca_pem.decode())
    directory = certs_dir / registry
    if directory.is_dir():
        for ca in sorted(directory.glob("*.crt")):
            context.load_verify_locations(cafile=str(ca))
    return context


@dataclass(frozen=True)
class FetchedManifest:
    data: bytes
    media_type: str
    digest: Digest


class RegistryClient:
    """One repository on one registry; a context manager that owns its connections."""

    def __init__(
        self,
        endpoint: Endpoint,
        repository: str,
        *,
        credentials: Credentials | None = None,
        push: bool = False,
        transport: httpx.BaseTransport | None = None,
        certs_dir: Path = CERTS_DIR,
        ca_pem: bytes | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.repository = repository
        scope = scope_for(repository, push=push) if repository else ""
        self.authorizer = Authorizer(credentials, scope=scope)
        verify: ssl.SSLContext | bool = (
            tls_context(endpoint.registry, certs_dir=certs_dir, ca_pem=ca_pem)
            if endpoint.verify
            else False
        )
        self._http = httpx.Client(
            verify=verify,
            timeout=TIMEOUT,
            follow_redirects=True,
            trust_env=not endpoint.loopback,  # a proxy must not capture a local registry
            transport=transport,
        )
        self.base = f"{endpoint.schemes[0]}://{endpoint.host}"

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ---- the API -----------------------------------------------------------------

    def ping(self) -> httpx.Response:
        """GET /v2/, choosing the scheme; Unavailable naming the host if none answers."""
        failure: Exception | None = None
        for scheme in self.endpoint.schemes:
            self.base = f"{scheme}://{self.endpoint.host}"
            try:
                response = self._send("GET", "/v2/")
            except httpx.TransportError as error:
                failure = error
                continue
            if response.status_code == 401:
                raise self._error(response, "/v2/")
            if response.status_code != 200:
                raise Unavailable(
                    f"registry {self.endpoint.registry} answered /v2/ with "
                    f"{response.status_code}: {_detail(response)}"
                )
            return response
        raise Unavailable(f"registry {self.endpoint.registry} is unreachable: {_reason(failure)}")

    def get_manifest(self, reference: str) -> FetchedManifest:
        """A manifest or index by tag or digest; verified when asked by digest."""
        path = f"/v2/{self.repository}/manifests/{reference}"
        response = self._checked("GET", path, headers={"Accept": ACCEPT})
        data = response.content
        if len(data) > oci.MAX_DOCUMENT_SIZE:
            raise InvalidArgument(f"manifest {reference} is larger than {oci.MAX_DOCUMENT_SIZE}")
        digest = Digest("sha256:" + hashlib.sha256(data).hexdigest())
        if reference.startswith("sha256:") and digest != reference:
            raise InvalidArgument(f"manifest digest mismatch: expected {reference}, got {digest}")
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        return FetchedManifest(data=data, media_type=media_type, digest=digest)

    @contextmanager
    def open_blob(self, digest: Digest) -> Iterator[httpx.Response]:
        """A streamed GET of a blob (the caller verifies what it reads)."""
        response = self._send("GET", f"/v2/{self.repository}/blobs/{digest}", stream=True)
        try:
            if response.status_code != 200:
                raise self._error(response, f"blob {digest}")
            yield response
        finally:
            response.close()

    def get_blob_bytes(self, digest: Digest, *, max_size: int) -> bytes:
        """A small blob (a config) in memory, verified against its digest."""
        response = self._checked("GET", f"/v2/{self.repository}/blobs/{digest}")
        data = response.content
        if len(data) > max_size:
            raise InvalidArgument(f"blob {digest} exceeds the maximum of {max_size} bytes")
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise InvalidArgument(f"blob digest mismatch: expected {digest}, got {actual}")
        return data

    def has_blob(self, digest: Digest) -> bool:
        response = self._send("HEAD", f"/v2/{self.repository}/blobs/{digest}")
        if response.status_code == 404:
            return False
        if response.status_code != 200:
            raise self._error(response, f"blob {digest}")
        return True

    def upload_blob(
        self,
        digest: Digest,
        stream: Readable,
        *,
        progress: Callable[[int], None],
        mount_from: str | None = None,
    ) -> bool:
        """Upload a blob: POST a session, one streamed PATCH, PUT ?digest=. With
        `mount_from`, first ask the registry to mount it from that repository.
        → True if it was mounted (nothing sent)."""
        params = {"mount": digest, "from": mount_from} if mount_from else None
        path = f"/v2/{self.repository}/blobs/uploads/"
        response = self._send("POST", path, params=params)
        if response.status_code == 201:
            return True
        if response.status_code != 202:
            raise self._error(response, f"blob upload {digest}")
        response = self._send(
            "PATCH",
            self._location(response),
            content=_chunks(stream, progress),
            headers={"Content-Type": "application/octet-stream"},
            retry=False,  # the body is a stream: it cannot be sent twice
        )
        if response.status_code != 202:
            raise self._error(response, f"blob upload {digest}")
        done = httpx.URL(self._location(response)).copy_merge_params({"digest": digest})
        response = self._send("PUT", str(done), headers={"Content-Length": "0"})
        if response.status_code not in (200, 201, 204):
            raise self._error(response, f"blob upload {digest}")
        return False

    def put_manifest(self, reference: str, data: bytes, *, media_type: str) -> Digest:
        path = f"/v2/{self.repository}/manifests/{reference}"
        self._checked("PUT", path, content=data, headers={"Content-Type": media_type})
        return Digest("sha256:" + hashlib.sha256(data).hexdigest())

    # ---- requests ----------------------------------------------------------------

    def _send(
        self,
        method: str,
        url: str,
        *,
        stream: bool = False,
        retry: bool = True,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send with what the authorizer knows; on a 401 learn and (once) retry."""
        target = url if "://" in url else self.base + url
        for attempt in range(2):
            request = self._http.build_request(method, target, **kwargs)
            header = self.authorizer.header()
            if header:
                request.headers["Authorization"] = header
            response = self._http.send(request, stream=stream)
            if response.status_code != 401 or attempt or not retry:
                return response
            response.read()
            response.close()
            if not self.authorizer.learn(self._http, response):
                return response
        raise AssertionError("unreachable")

    def _checked(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._send(method, path, **kwargs)
        if response.status_code >= 300:
            what = path.rsplit("/", 1)[-1]
            raise self._error(response, f"{self.repository}:{what}")
        return response

    def _location(self, response: httpx.Response) -> str:
        location = response.headers.get("location")
        if not location:
            raise InvalidArgument(f"registry {self.endpoint.registry} gave no upload location")
        return str(httpx.URL(self.base + "/").join(location))

    def _error(self, response: httpx.Response, what: str) -> PyswarmError:
        """The api error for a failed response, in docker's words where it has some."""
        detail = _detail(response)
        code = response.status_code
        if code == 401:
            return Unauthorized(_prefixed("unauthorized", detail, "authentication required"))
        if code == 403:
            return Unauthorized(
                _prefixed("denied", detail, "requested access to the resource is denied")
            )
        if code == 404 and "/manifests/" in str(response.request.url):
            name = f"{self.endpoint.registry}/{self.repository}"
            reference = str(response.request.url).rsplit("/", 1)[-1]
            separator = "@" if reference.startswith("sha256:") else ":"
            return NotFound(f"manifest for {name}{separator}{reference} not found: {detail}")
        if code == 404:
            return NotFound(f"{what} not found: {detail}")
        return Unavailable(
            f"registry {self.endpoint.registry} answered {code} for {what}: {detail}"
        )


def _chunks(stream: Readable, progress: Callable[[int], None]) -> Iterator[bytes]:
    sent = 0
    while chunk := stream.read(CHUNK):
        yield chunk
        sent += len(chunk)
        progress(sent)


def _detail(response: httpx.Response) -> str:
    """`code: message` from the registry's JSON error body, or the status text."""
    try:
        response.read()
        document = response.json()
        errors = document.get("errors") or []
        first = errors[0]
        code = str(first.get("code", "")).lower().replace("_", " ")
        return f"{code}: {first.get('message', '')}"
    except (httpx.HTTPError, httpx.StreamError, ValueError, AttributeError, LookupError, TypeError):
        return response.reason_phrase.lower() or str(response.status_code)


def _prefixed(code: str, detail: str, default: str) -> str:
    """`unauthorized: <detail>`, without saying the code twice."""
    if detail.startswith(f"{code}:"):
        return detail
    return f"{code}: {default}"


def _reason(error: Exception | None) -> str:
    """`[Errno 111] Connection refused` → `connection refused` (lower case: the client
    reads a capitalised "Connection refused" as its own daemon being down)."""
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(error or "no scheme to try"))
    return text[:1].lower() + text[1:]

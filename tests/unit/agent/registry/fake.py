"""An in-memory OCI distribution registry for httpx.MockTransport: enough of the
protocol (manifests, blobs, upload sessions, Basic/Bearer challenges) to unit-test the
client's logic without a socket."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field

import httpx

from agent.images.blobs import Digest


def digest_of(data: bytes) -> Digest:
    return Digest("sha256:" + hashlib.sha256(data).hexdigest())


@dataclass
class FakeRegistry:
    manifests: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # ref → (body, type)
    blobs: dict[str, bytes] = field(default_factory=dict)
    uploads: dict[str, bytes] = field(default_factory=dict)
    auth: str = ""  # "", "basic" or "bearer"
    users: dict[str, str] = field(default_factory=lambda: {"alice": "s3cret"})
    token_requests: list[httpx.QueryParams] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    corrupt: set[str] = field(default_factory=set)  # blob digests served with wrong bytes

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def add_manifest(self, ref: str, document: dict[str, object], media_type: str) -> str:
        body = json.dumps(document).encode()
        digest = digest_of(body)
        self.manifests[ref] = self.manifests[digest] = (body, media_type)
        return digest

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.log.append(f"{request.method} {path}")
        if path == "/token":
            return self._token(request)
        if not self._authorized(request):
            challenge = (
                'Basic realm="fake"'
                if self.auth == "basic"
                else f'Bearer realm="https://{request.url.host}/token",service="fake"'
            )
            return httpx.Response(
                401,
                headers={"WWW-Authenticate": challenge},
                json=_error("UNAUTHORIZED", "authentication required"),
            )
        if path == "/v2/":
            return httpx.Response(200, json={})
        last = path.rsplit("/", 1)[-1]
        if "/manifests/" in path:
            return self._manifest(request, last)
        if "/blobs/uploads/" in path:
            return self._upload(request)
        return self._blob(request, last)

    def _authorized(self, request: httpx.Request) -> bool:
        header = str(request.headers.get("authorization", ""))
        if not self.auth:
            return True
        if self.auth == "basic":
            return bool(header in {_basic(u, p) for u, p in self.users.items()})
        return header == "Bearer good-token"

    def _token(self, request: httpx.Request) -> httpx.Response:
        self.token_requests.append(request.url.params)
        header = request.headers.get("authorization")
        if header is not None and header not in {_basic(u, p) for u, p in self.users.items()}:
            return httpx.Response(401, json=_error("UNAUTHORIZED", "bad credentials"))
        return httpx.Response(200, json={"token": "good-token"})

    def _manifest(self, request: httpx.Request, ref: str) -> httpx.Response:
        if request.method == "PUT":
            body = request.read()
            self.manifests[ref] = self.manifests[digest_of(body)] = (
                body,
                request.headers["content-type"],
            )
            return httpx.Response(201)
        if ref not in self.manifests:
            return httpx.Response(404, json=_error("MANIFEST_UNKNOWN", "manifest unknown"))
        body, media_type = self.manifests[ref]
        return httpx.Response(200, content=body, headers={"Content-Type": media_type})

    def _blob(self, request: httpx.Request, digest: str) -> httpx.Response:
        if digest not in self.blobs:
            return httpx.Response(404, json=_error("BLOB_UNKNOWN", "blob unknown"))
        data = self.blobs[digest]
        if digest in self.corrupt:
            data = data[:-1] + bytes([data[-1] ^ 1])
        if request.method == "HEAD":
            return httpx.Response(200, headers={"Content-Length": str(len(data))})
        return httpx.Response(200, content=data)

    def _upload(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            session = f"s{len(self.uploads)}"
            self.uploads[session] = b""
            location = f"{request.url.path}{session}?_state=x"  # relative, with a query
            return httpx.Response(202, headers={"Location": location})
        session = request.url.path.rsplit("/", 1)[-1]
        if request.method == "PATCH":
            self.uploads[session] += request.read()
            return httpx.Response(202, headers={"Location": f"{request.url.path}?_state=y"})
        data = self.uploads.pop(session)
        if digest_of(data) != request.url.params["digest"]:
            return httpx.Response(400, json=_error("DIGEST_INVALID", "digest mismatch"))
        self.blobs[digest_of(data)] = data
        return httpx.Response(201)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _error(code: str, message: str) -> dict[str, object]:
    return {"errors": [{"code": code, "message": message}]}

"""The registry's aiohttp application: routing, auth, and the distribution API handlers.

One catch-all route under `/v2/` hands the path to `Registry.dispatch`, which matches
it against the spec's endpoint patterns in order (upload paths before blob digests, so
a repository named `x` never reads `uploads` as a digest). Repository names may contain
`/`, hence the patterns rather than aiohttp's per-segment variables; names are
validated by the storage layer (NAME_INVALID), not by a 404 from the router.

Every `RegistryError` becomes the spec's JSON error body; every response carries
`Docker-Distribution-API-Version: registry/2.0`. Request bodies are streamed to disk in
1 MiB pieces and never held whole, except manifests (capped at 4 MiB).

GET of a manifest returns the stored bytes with their stored media type whatever the
`Accept` header says. docker's reference registry does the same for schema 2 and OCI
manifests; it differs only for clients that accept neither lists nor indexes (it then
serves the linux/amd64 child of a list, or MANIFEST_UNKNOWN for an OCI index) and for
schema 1 clients, which it down-converts; no current client is either.

An upload session's `Range` is `0-<size-1>`, and `0-0` while empty, as the reference
registry reports it.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import ssl
import sys
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware

from manager.registry.auth import BasicAuth
from manager.registry.errors import Code, RegistryError
from manager.registry.storage import (
    MANIFEST_LIMIT,
    Storage,
    Upload,
    check_name,
    digest_of,
    is_tag,
    parse_digest,
    parse_manifest,
)

DEFAULT_MAX_BODY = 2 << 30
API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")
REALM = 'Basic realm="pyswarm"'
BODY_CHUNK = 1 << 20
SHUTDOWN_TIMEOUT = 10.0  # seconds for in-flight requests at SIGTERM; uploads resume
_CONTENT_RANGE = re.compile(r"(?:bytes[ =])?(\d+)-(\d+)(?:/\d+|/\*)?")

Handler = Callable[[web.Request, dict[str, str]], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Config:
    root: Path
    max_body: int = DEFAULT_MAX_BODY
    htpasswd: Path | None = None


def _range(size: int) -> str:
    return f"0-{max(size - 1, 0)}"


def _paginate(items: list[str], request: web.Request) -> tuple[list[str], str | None]:
    """The page after `last` of at most `n` items, and the last item if more follow."""
    last = request.query.get("last", "")
    if last:
        items = [item for item in items if item > last]
    n_text = request.query.get("n")
    if n_text is None:
        return items, None
    if not n_text.isdigit():
        raise RegistryError(Code.PAGINATION_NUMBER_INVALID, {"n": n_text[:20]})
    n = int(n_text)
    if len(items) <= n:
        return items, None
    return items[:n], items[n - 1] if n else None


def _next_link(path: str, n: str, last: str) -> dict[str, str]:
    return {"Link": f'<{path}?last={last}&n={n}>; rel="next"'}


def _reference_digest(reference: str) -> str:
    """The hex of a digest reference; TAG_INVALID for what is neither tag nor digest."""
    if ":" not in reference:
        raise RegistryError(Code.TAG_INVALID, {"reference": reference[:200]})
    return parse_digest(reference)


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_chunked(BODY_CHUNK):
        yield chunk


class Registry:
    """The endpoint handlers over one `Storage`."""

    def __init__(self, storage: Storage, *, max_body: int) -> None:
        self.storage = storage
        self.max_body = max_body
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        name = r"(?P<name>.+)"
        self.routes: list[tuple[re.Pattern[str], dict[str, Handler]]] = [
            (re.compile(r""), {"GET": self.base}),
            (re.compile(r"_catalog"), {"GET": self.catalog}),
            (re.compile(rf"{name}/tags/list"), {"GET": self.tags_list}),
            (
                re.compile(rf"{name}/manifests/(?P<reference>[^/]+)"),
                {
                    "GET": self.get_manifest,
                    "PUT": self.put_manifest,
                    "DELETE": self.delete_manifest,
                },
            ),
            (re.compile(rf"{name}/blobs/uploads/?"), {"POST": self.start_upload}),
            (
                re.compile(rf"{name}/blobs/uploads/(?P<uuid>[^/]+)"),
                {
                    "GET": self.upload_status,
                    "PATCH": self.patch_upload,
                    "PUT": self.finish_upload,
                    "DELETE": self.cancel_upload,
                },
            ),
            (
                re.compile(rf"{name}/blobs/(?P<digest>[^/]+)"),
                {"GET": self.get_blob, "DELETE": self.delete_blob},
            ),
        ]

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info.get("tail", "")
        method = "GET" if request.method == "HEAD" else request.method
        for pattern, handlers in self.routes:
            match = pattern.fullmatch(tail)
            if match is None:
                continue
            handler = handlers.get(method)
            if handler is None:
                raise RegistryError(Code.UNSUPPORTED, {"method": request.method})
            return await handler(request, match.groupdict())
        raise web.HTTPNotFound()

    async def base(self, request: web.Request, _: dict[str, str]) -> web.StreamResponse:
        return web.json_response({})

    # blobs

    async def get_blob(self, request: web.Request, args: dict[str, str]) -> web.StreamResponse:
        name = check_name(args["name"])
        hexpart = parse_digest(args["digest"])
        if not self.storage.has_layer(name, hexpart):
            raise RegistryError(Code.BLOB_UNKNOWN, {"digest": digest_of(hexpart)})
        headers = {
            "Docker-Content-Digest": digest_of(hexpart),
            "Content-Type": "application/octet-stream",
            "Cache-Control": "max-age=31536000",
        }
        return web.FileResponse(self.storage.blob_path(hexpart), headers=headers)

    async def delete_blob(self, request: web.Request, args: dict[str, str]) -> web.StreamResponse:
        name = check_name(args["name"])
        hexpart = parse_digest(args["digest"])
        if not self.storage.unlink_layer(name, hexpart):
            raise RegistryError(Code.BLOB_UNKNOWN, {"digest": digest_of(hexpart)})
        return web.Response(status=202, headers={"Docker-Content-Digest": digest_of(hexpart)})

    # uploads

    def _check_length(self, request: web.Request, already: int = 0) -> None:
        if (request.content_length or 0) + already > self.max_body:
            raise RegistryError(Code.TOO_LARGE, {"limit": self.max_body})

    def _lock(self, upload_id: str) -> asyncio.Lock:
        lock = self._locks.get(upload_id)
        if lock is None:
            lock = self._locks[upload_id] = asyncio.Lock()
        return lock

    def _blob_created(self, name: str, hexpart: str) -> web.Response:
        headers = {
            "Location": f"/v2/{name}/blobs/{digest_of(hexpart)}",
            "Docker-Content-Digest": digest_of(hexpart),
        }
        return web.Response(status=201, headers=headers)

    def _upload_accepted(self, upload: Upload, size: int, status: int = 202) -> web.Response:
        headers = {
            "Location": f"/v2/{upload.repo}/blobs/uploads/{upload.id}",
            "Docker-Upload-UUID": upload.id,
            "Range": _range(size),
        }
        return web.Response(status=status, headers=headers)

    async def start_upload(self, request: web.Request, args: dict[str, str]) -> web.StreamResponse:
        name = check_name(args["name"])
        mount, source = request.query.get("mount"), request.query.get("from")
        if mount and source:
            hexpart = parse_digest(mount)
            if self.storage.has_layer(check_name(source), hexpart):
                await asyncio.to_thread(self.storage.link_layer, name, hexpart)
                return self._blob_created(name, hexpart)
        digest = request.query.get("digest")
        if digest is None:
            return self._upload_accepted(await asyncio.to_thread(self.storage.new_upload, name), 0)
        hexpart = parse_digest(digest)
        self._check_length(request)
        upload = await asyncio.to_thread(self.storage.new_upload, name)
        try:
            size = await self.storage.append(upload, _body(request), limit=self.max_body)
            await self.storage.commit(Upload(upload.id, name, upload.path, size), hexpart)
        finally:
            self.storage.cancel(upload)
        return self._blob_created(name, hexpart)

    async def _append(self, request: web.Request, upload: Upload) -> int:
        """Append the body after checking `Content-Range` (if any) against the session."""
        header = request.headers.get("Content-Range")
        if header is not None:
            match = _CONTENT_RANGE.fullmatch(header.strip())
            start, end = (int(match[1]), int(match[2])) if match else (-1, -1)
            length = request.content_length
            if (
                start != upload.size
                or end < start
                or (length is not None and length != end - start + 1)
            ):
                raise RegistryError(
                    Code.RANGE_INVALID,
                    {"range": header[:100], "size": upload.size},
                    headers={"Range": _range(upload.size), "Docker-Upload-UUID": upload.id},
                )
        self._check_length(request, upload.size)
        return await self.storage.append(upload, _body(request), limit=self.max_body)

    async def patch_upload(self, request: web.Request, args: dict[str, str]) -> web.StreamResponse:
        async with self._lock(args["uuid"]):
            upload = self.storage.get_upload(args["name"], args["uuid"])
            size = await self._append(request, upload)
            return self._upload_accepted(upload, size)

    async def finish_upload(self, request: web.Request, args: dict[str, str]) -> web.StreamResponse:
        digest = request.query.get("digest")
        if digest is None:
            raise RegistryError(Code.DIGEST_INVALID, message="digest parameter missing")
        hexpart = parse_digest(digest)
        async with self._lock(args["uuid"]):
            upload = self.storage.get_upload(args["name"], args["uuid"])
            size = await self._append(request, upload)
            await self.storage.commit(Upload(upload.id, upload.repo, upload.path, size), hexpart)
        return self._blob_created(upload.repo, hexpart)

    async def upload_status(self, request: web.Request, args: dict[str, str]) -> web.StreamResponse:
        upload = self.storage.get_upload(args["name"], args["uuid"])
        return self._upload_accepted(upload, upload.size, status=204)

    async def cancel_upload(self, request: web.Request, args: dict[str, str]) -> web.StreamResponse:
        async with self._lock(args["uuid"]):
            self.storage.cancel(self.storage.get_upload(args["name"], args["uuid"]))
        return web.Response(status=204)

    # manifests

    async def _manifest_body(self, request: web.Request) -> bytes:
        if (request.content_length or 0) > MANIFEST_LIMIT:
            raise RegistryError(Code.TOO_LARGE, {"limit": MANIFEST_LIMIT})
        body = bytearray()
        async for chunk in _body(request):
            body += chunk
            if len(body) > MANIFEST_LIMIT:
                raise RegistryError(Code.TOO_LARGE, {"limit": MANIFEST_LIMIT})
        return bytes(body)

    def _check_references(self, name: str, body: bytes, content_type: str) -> str:
        media_type, refs = parse_manifest(body, content_type)
        for hexpart in refs.blobs:
            if not self.storage.has_layer(name, hexpart):
                raise RegistryError(Code.MANIFEST_BLOB_UNKNOWN, {"digest": digest_of(hexpart)})
        for hexpart in refs.manifests:
            if not self.storage.has_manifest(name, hexpart):
                raise RegistryError(Code.MANIFEST_BLOB_UNKNOWN, {"digest": digest_of(hexpart)})
        return media_type

    async def put_manifest(self, request: web.Request, args: dict[str, str]) -> web.StreamResponse:
        name, reference = check_name(args["name"]), args["reference"]
        expected = None if is_tag(reference) else _reference_digest(reference)
        body = await self._manifest_body(request)
        media_type = self._check_references(name, body, request.content_type)
        actual = hashlib.sha256(body).hexdigest()
        if expected is not None and expected != actual:
            raise RegistryError(
                Code.DIGEST_INVALID, {"expected": reference, "actual": digest_of(actual)}
            )
        hexpart = await asyncio.to_thread(
            self.storage.put_manifest, name, reference, body, media_type
        )
        headers = {
            "Location": f"/v2/{name}/manifests/{digest_of(hexpart)}",
            "Docker-Content-Digest": digest_of(hexpart),
        }
        return web.Response(status=201, headers=headers)

    async def get_manifest(self, request: web.Request, args: dict[str, str]) -> web.StreamResponse:
        name, reference = check_name(args["name"]), args["reference"]
        hexpart = self.storage.resolve(name, reference)
        body, media_type = self.storage.get_manifest(name, hexpart)
        headers = {
            "Docker-Content-Digest": digest_of(hexpart),
            "Content-Type": media_type,
            "ETag": f'"{digest_of(hexpart)}"',
        }
        return web.Response(body=body, headers=headers)

    async def delete_manifest(
        self, request: web.Request, args: dict[str, str]
    ) -> web.StreamResponse:
        await asyncio.to_thread(
            self.storage.delete_manifest, check_name(args["name"]), args["reference"]
        )
        return web.Response(status=202)

    # listings

    async def tags_list(self, request: web.Request, args: dict[str, str]) -> web.StreamResponse:
        name = check_name(args["name"])
        page, last = _paginate(self.storage.tags(name), request)
        headers = _next_link(request.path, request.query["n"], last) if last else {}
        return web.json_response({"name": name, "tags": page}, headers=headers)

    async def catalog(self, request: web.Request, _: dict[str, str]) -> web.StreamResponse:
        page, last = _paginate(self.storage.repositories(), request)
        headers = _next_link(request.path, request.query["n"], last) if last else {}
        return web.json_response({"repositories": page}, headers=headers)


def _auth_middleware(auth: BasicAuth) -> Middleware:
    @web.middleware
    async def check_auth(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not await auth.check(request.headers.get("Authorization")):
            raise RegistryError(Code.UNAUTHORIZED, headers={"WWW-Authenticate": REALM})
        return await handler(request)

    return check_auth


@web.middleware
async def _errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except RegistryError as e:
        return e.response()


async def _add_version_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers[API_VERSION[0]] = API_VERSION[1]


def make_app(config: Config) -> web.Application:
    """The registry application over `config.root`."""
    middlewares: list[Middleware] = [_errors_middleware]
    if config.htpasswd is not None:
        middlewares.append(_auth_middleware(BasicAuth.from_file(config.htpasswd)))
    app = web.Application(middlewares=middlewares, client_max_size=MANIFEST_LIMIT)
    registry = Registry(Storage(config.root), max_body=config.max_body)
    app.router.add_route("*", "/v2", registry.dispatch)
    app.router.add_route("*", "/v2/{tail:.*}", registry.dispatch)
    app.on_response_prepare.append(_add_version_header)
    return app


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def serve(config: Config, *, host: str, port: int, ssl_context: ssl.SSLContext | None) -> None:
    """Serve in the foreground until SIGINT or SIGTERM (aiohttp's run_app handles both)."""
    scheme = "https" if ssl_context else "http"

    def announce(_: str) -> None:
        print(f"pyswarm registry listening on {scheme}://{host}:{port}", file=sys.stderr)

    web.run_app(
        make_app(config),
        host=host,
        port=port,
        ssl_context=ssl_context,
        print=announce,
        access_log=None,
        handle_signals=True,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
    )

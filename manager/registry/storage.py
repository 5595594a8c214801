"""The registry's on-disk storage: blobs by digest, repositories as links, uploads.

Layout under `root`:

    blobs/sha256/<hex>                               blob or manifest bytes, named by digest
    repositories/<name>/_layers/<hex>                link: the repository may serve that blob
    repositories/<name>/_manifests/revisions/<hex>   link: a manifest; holds its media type
    repositories/<name>/_manifests/tags/<tag>        the digest the tag points at
    uploads/<uuid>/{data,startedat,repo}             an upload session, resumable after restart

Invariants:
- A file under `blobs/` is complete and its name is the sha256 of its content. Upload
  data is hashed, compared with the digest the client named, fsynced and `os.replace`d
  into place; a mismatch deletes the session. Small files (manifests, links, tags) are
  written to a `.tmp-*` sibling, fsynced and replaced. A crash therefore leaves at most
  an upload session or a temporary file, never a partial blob.
- Names, tags and digests are validated before they become paths: the name grammar
  allows no `.`/`..` component and no component starting with `_`, so a repository can
  neither escape `repositories/` nor collide with `_layers`/`_manifests`.
- A blob is visible in a repository only through its `_layers` link, as in docker's
  reference registry; cross-repository mount adds a link, never a copy.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import time
import uuid as uuidlib
from collections.abc import AsyncIterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from manager.registry.errors import Code, RegistryError

CHUNK = 1 << 20
MANIFEST_LIMIT = 4 << 20  # the reference registry's cap on a manifest body
MAX_NAME = 255
UPLOAD_MAX_AGE = 7 * 24 * 3600.0  # as the reference registry's upload purging
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*"
_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_UUID = re.compile(r"[0-9a-f]{32}")
_TEMP = ".tmp-"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)


def check_name(name: str) -> str:
    if len(name) > MAX_NAME or not _NAME.fullmatch(name):
        raise RegistryError(Code.NAME_INVALID, {"name": name[:300]})
    return name


def is_tag(reference: str) -> bool:
    return bool(_TAG.fullmatch(reference))


def parse_digest(text: str) -> str:
    """The hex of a `sha256:` digest; DIGEST_INVALID for anything else."""
    if not _DIGEST.fullmatch(text):
        raise RegistryError(Code.DIGEST_INVALID, {"digest": text[:200]}, message="invalid digest")
    algorithm, _, hexpart = text.partition(":")
    if algorithm != "sha256":
        raise RegistryError(
            Code.DIGEST_INVALID, {"digest": text[:200]}, message="unsupported digest algorithm"
        )
    if not _HEX64.fullmatch(hexpart):
        raise RegistryError(Code.DIGEST_INVALID, {"digest": text[:200]}, message="invalid digest")
    return hexpart


def digest_of(hexpart: str) -> str:
    return f"sha256:{hexpart}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a fsynced temporary sibling and `os.replace`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f"{_TEMP}{uuidlib.uuid4().hex}")
    try:
        with open(temp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


@dataclass(frozen=True)
class Upload:
    """An upload session: `size` bytes received so far, in `path/data`."""

    id: str
    repo: str
    path: Path
    size: int

    @property
    def data(self) -> Path:
        return self.path / "data"


@dataclass(frozen=True)
class References:
    """What a manifest points at: blobs (config, layers) and child manifests."""

    blobs: tuple[str, ...]
    manifests: tuple[str, ...]


def parse_manifest(body: bytes, content_type: str) -> tuple[str, References]:
    """The media type of a manifest body and the digests (hex) it references."""
    try:
        document: Any = json.loads(body)
    except (UnicodeDecodeError, ValueError) as e:
        raise RegistryError(Code.MANIFEST_INVALID, {"reason": f"not JSON: {e}"}) from None
    if not isinstance(document, dict):
        raise RegistryError(Code.MANIFEST_INVALID, {"reason": "not a JSON object"})
    declared = document.get("mediaType")
    media_type = content_type if content_type in MANIFEST_TYPES else declared
    if media_type not in MANIFEST_TYPES:
        raise RegistryError(Code.MANIFEST_INVALID, {"reason": f"unsupported type {media_type!r}"})
    if declared is not None and declared != media_type:
        raise RegistryError(Code.MANIFEST_INVALID, {"reason": "mediaType differs from header"})
    try:
        if media_type in INDEX_TYPES:
            children = tuple(parse_digest(m["digest"]) for m in document["manifests"])
            return media_type, References(blobs=(), manifests=children)
        layers = [d for d in document["layers"] if not d.get("urls")]  # foreign layers
        blobs = tuple(parse_digest(d["digest"]) for d in [document["config"], *layers])
    except (KeyError, TypeError, AttributeError) as e:
        raise RegistryError(Code.MANIFEST_INVALID, {"reason": f"bad field {e}"}) from None
    return media_type, References(blobs=blobs, manifests=())


class Storage:
    """The registry's files under `root`; every method validates before it touches disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.repos = root / "repositories"
        self.uploads = root / "uploads"
        for path in (self.blobs, self.repos, self.uploads):
            path.mkdir(parents=True, exist_ok=True)
        for stale in self.blobs.glob(f"{_TEMP}*"):
            stale.unlink(missing_ok=True)
        self.purge_uploads(older_than=UPLOAD_MAX_AGE)
        # Running sha256 of sessions appended in order by this process; a session
        # resumed after a restart is hashed from its file instead.
        self._hashers: dict[str, tuple[int, Any]] = {}

    # blobs and layer links

    def blob_path(self, hexpart: str) -> Path:
        return self.blobs / hexpart

    def has_blob(self, hexpart: str) -> bool:
        return self.blob_path(hexpart).is_file()

    def _repo(self, name: str) -> Path:
        return self.repos / check_name(name)

    def repo_exists(self, name: str) -> bool:
        return self._repo(name).is_dir()

    def link_layer(self, name: str, hexpart: str) -> None:
        link = self._repo(name) / "_layers" / hexpart
        if not link.is_file():
            write_atomic(link, digest_of(hexpart).encode())

    def has_layer(self, name: str, hexpart: str) -> bool:
        return (self._repo(name) / "_layers" / hexpart).is_file() and self.has_blob(hexpart)

    def unlink_layer(self, name: str, hexpart: str) -> bool:
        link = self._repo(name) / "_layers" / hexpart
        if not link.is_file():
            return False
        link.unlink()
        return True

    # upload sessions

    def new_upload(self, name: str) -> Upload:
        check_name(name)
        upload_id = uuidlib.uuid4().hex
        path = self.uploads / upload_id
        path.mkdir()
        write_atomic(path / "repo", name.encode())
        write_atomic(path / "startedat", f"{time.time():.6f}".encode())
        (path / "data").touch()
        self._hashers[upload_id] = (0, hashlib.sha256())
        return Upload(upload_id, name, path, 0)

    def get_upload(self, name: str, upload_id: str) -> Upload:
        check_name(name)
        path = self.uploads / upload_id
        unknown = RegistryError(Code.BLOB_UPLOAD_UNKNOWN, {"uuid": upload_id[:64]})
        if not _UUID.fullmatch(upload_id) or not path.is_dir():
            raise unknown
        try:
            if (path / "repo").read_text() != name:
                raise unknown
            size = (path / "data").stat().st_size
        except FileNotFoundError:
            raise unknown from None
        return Upload(upload_id, name, path, size)

    async def append(self, upload: Upload, chunks: AsyncIterable[bytes], *, limit: int) -> int:
        """Append a request body to the session; the new size. All or nothing: on a
        failure (limit passed, client gone) the data is cut back to `upload.size`."""
        hashed = self._hashers.pop(upload.id, None)
        hasher = hashed[1] if hashed and hashed[0] == upload.size else None
        size = upload.size
        try:
            with open(upload.data, "ab") as f:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise RegistryError(Code.TOO_LARGE, {"limit": limit})
                    f.write(chunk)
                    if hasher is not None:
                        hasher.update(chunk)
        except BaseException:
            os.truncate(upload.data, upload.size)
            raise
        if hasher is not None:
            self._hashers[upload.id] = (size, hasher)
        return size

    async def commit(self, upload: Upload, hexpart: str) -> None:
        """Verify the session's data against `hexpart`, move it into `blobs/` and link
        it into the repository; DIGEST_INVALID (and the session removed) on a mismatch."""
        hashed = self._hashers.pop(upload.id, None)
        if hashed and hashed[0] == upload.size:
            actual = hashed[1].hexdigest()
        else:
            actual = await asyncio.to_thread(_hash_file, upload.data)
        if actual != hexpart:
            self.cancel(upload)
            raise RegistryError(
                Code.DIGEST_INVALID, {"expected": digest_of(hexpart), "actual": digest_of(actual)}
            )
        await asyncio.to_thread(self._install, upload, hexpart)

    def _install(self, upload: Upload, hexpart: str) -> None:
        # Order: the blob is durable under its name before the repository links it.
        if not self.has_blob(hexpart):
            with open(upload.data, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(upload.data, self.blob_path(hexpart))
            _fsync_dir(self.blobs)
        self.link_layer(upload.repo, hexpart)
        self.cancel(upload)

    def purge_uploads(self, *, older_than: float) -> list[str]:
        """Remove sessions started more than `older_than` seconds ago (abandoned by
        their clients); the ids removed."""
        now, removed = time.time(), []
        for path in self.uploads.iterdir():
            try:
                started = float((path / "startedat").read_text())
            except (OSError, ValueError):
                started = path.stat().st_mtime  # created but not yet written: by mtime
            if now - started > older_than:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path.name)
        return removed

    def cancel(self, upload: Upload) -> None:
        self._hashers.pop(upload.id, None)
        shutil.rmtree(upload.path, ignore_errors=True)

    # manifests and tags

    def put_manifest(self, name: str, reference: str, body: bytes, media_type: str) -> str:
        hexpart = hashlib.sha256(body).hexdigest()
        if not self.has_blob(hexpart):
            write_atomic(self.blob_path(hexpart), body)
        manifests = self._repo(name) / "_manifests"
        write_atomic(manifests / "revisions" / hexpart, media_type.encode())
        if is_tag(reference):
            write_atomic(manifests / "tags" / reference, digest_of(hexpart).encode())
        return hexpart

    def has_manifest(self, name: str, hexpart: str) -> bool:
        return (self._repo(name) / "_manifests" / "revisions" / hexpart).is_file()

    def resolve(self, name: str, reference: str) -> str:
        """The hex digest a tag or digest reference names in the repository."""
        unknown = RegistryError(Code.MANIFEST_UNKNOWN, {"reference": reference[:200]})
        if is_tag(reference):
            try:
                reference = (self._repo(name) / "_manifests" / "tags" / reference).read_text()
            except FileNotFoundError:
                raise unknown from None
        hexpart = parse_digest(reference)
        if not self.has_manifest(name, hexpart):
            raise unknown
        return hexpart

    def get_manifest(self, name: str, hexpart: str) -> tuple[bytes, str]:
        media_type = (self._repo(name) / "_manifests" / "revisions" / hexpart).read_text()
        return self.blob_path(hexpart).read_bytes(), media_type

    def delete_manifest(self, name: str, reference: str) -> None:
        """Delete a tag, or a revision and every tag pointing at it."""
        hexpart = self.resolve(name, reference)
        tags = self._repo(name) / "_manifests" / "tags"
        if is_tag(reference):
            (tags / reference).unlink()
            return
        for tag in self.tags(name):
            if (tags / tag).read_text() == digest_of(hexpart):
                (tags / tag).unlink(missing_ok=True)
        (self._repo(name) / "_manifests" / "revisions" / hexpart).unlink()

    def tags(self, name: str) -> list[str]:
        if not self.repo_exists(name):
            raise RegistryError(Code.NAME_UNKNOWN, {"name": name})
        tags = self._repo(name) / "_manifests" / "tags"
        if not tags.is_dir():
            return []
        return sorted(p.name for p in tags.iterdir() if not p.name.startswith(_TEMP))

    def repositories(self) -> list[str]:
        return sorted(self._walk_repositories())

    def _walk_repositories(self) -> Iterator[str]:
        for dirpath, dirnames, _ in os.walk(self.repos):
            if "_manifests" in dirnames:
                yield Path(dirpath).relative_to(self.repos).as_posix()
            dirnames[:] = [d for d in dirnames if not d.startswith("_")]


def _hash_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()

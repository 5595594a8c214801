"""The storage layer alone: crash safety of uploads, stale sessions, validation."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from manager.registry.errors import Code, RegistryError
from manager.registry.storage import Storage, check_name, parse_digest, parse_manifest

pytestmark = pytest.mark.unit


class ClientGone(Exception):
    pass


async def interrupted() -> AsyncIterator[bytes]:
    yield b"partial data"
    raise ClientGone


def test_interrupted_append_leaves_the_session_as_it_was(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    upload = storage.new_upload("app")

    async def scenario() -> None:
        with pytest.raises(ClientGone):
            await storage.append(upload, interrupted(), limit=1 << 20)

    asyncio.run(scenario())
    assert storage.get_upload("app", upload.id).size == 0
    assert list((tmp_path / "blobs" / "sha256").iterdir()) == []


def test_commit_after_restart_hashes_the_file(tmp_path: Path) -> None:
    data = b"resumed"
    upload = Storage(tmp_path).new_upload("app")
    (upload.data).write_bytes(data)
    restarted = Storage(tmp_path)  # no running hash for the session
    hexpart = hashlib.sha256(data).hexdigest()

    asyncio.run(restarted.commit(restarted.get_upload("app", upload.id), hexpart))
    assert (tmp_path / "blobs" / "sha256" / hexpart).read_bytes() == data
    assert restarted.has_layer("app", hexpart)
    assert not upload.path.exists()


def test_stale_uploads_are_purged_at_start(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    old, fresh = storage.new_upload("app"), storage.new_upload("app")
    (old.path / "startedat").write_text("0")
    (tmp_path / "blobs" / "sha256" / ".tmp-leftover").write_bytes(b"x")
    Storage(tmp_path)
    assert not old.path.exists()
    assert fresh.path.exists()
    assert list((tmp_path / "blobs" / "sha256").iterdir()) == []


def test_unknown_repository_session_is_refused(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    upload = storage.new_upload("app")
    with pytest.raises(RegistryError) as e:
        storage.get_upload("other", upload.id)
    assert e.value.code is Code.BLOB_UPLOAD_UNKNOWN
    os.remove(upload.path / "repo")
    with pytest.raises(RegistryError):
        storage.get_upload("app", upload.id)


@pytest.mark.parametrize("name", ["a", "a/b", "a.b_c__d---e/f0", "x" * 255])
def test_valid_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "A", "a/", "/a", "a..b", "a/./b", "a" * 256, "a b", "é"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(RegistryError) as e:
        check_name(name)
    assert e.value.code is Code.NAME_INVALID


def test_digest_messages() -> None:
    with pytest.raises(RegistryError, match="unsupported digest algorithm"):
        parse_digest("sha512:" + "0" * 128)
    with pytest.raises(RegistryError, match="invalid digest"):
        parse_digest("sha256:" + "A" * 64)
    assert parse_digest("sha256:" + "0" * 64) == "0" * 64


def test_foreign_layers_are_not_required() -> None:
    body = (
        b'{"schemaVersion":2,"config":{"digest":"sha256:' + b"1" * 64 + b'"},'
        b'"layers":[{"digest":"sha256:' + b"2" * 64 + b'","urls":["http://x"]}]}'
    )
    media_type, refs = parse_manifest(body, "application/vnd.oci.image.manifest.v1+json")
    assert refs.blobs == ("1" * 64,)
    assert media_type.endswith("manifest.v1+json")

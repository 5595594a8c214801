"""Blob endpoints and upload sessions: monolithic, chunked, mount, cancel, limits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from manager.registry.app import make_app
from tests.unit.manager.registry.harness import digest, errors, push_blob, run

pytestmark = pytest.mark.unit
DATA = b"0123456789abcdef"


def blob_files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "blobs" / "sha256").iterdir())


def test_base_endpoint_answers_with_the_api_version(tmp_path: Path) -> None:
    async def scenario(client):
        r = await client.get("/v2/")
        assert r.status == 200
        assert await r.json() == {}
        assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"

    run(tmp_path, scenario)


def test_monolithic_upload_then_head_get_and_range(tmp_path: Path) -> None:
    async def scenario(client):
        d = await push_blob(client, "lib/app", DATA)
        head = await client.head(f"/v2/lib/app/blobs/{d}")
        assert head.status == 200
        assert head.headers["Content-Length"] == str(len(DATA))
        assert head.headers["Docker-Content-Digest"] == d
        get = await client.get(f"/v2/lib/app/blobs/{d}")
        assert await get.read() == DATA
        part = await client.get(f"/v2/lib/app/blobs/{d}", headers={"Range": "bytes=2-5"})
        assert part.status == 206
        assert await part.read() == DATA[2:6]
        assert part.headers["Content-Range"] == f"bytes 2-5/{len(DATA)}"

    run(tmp_path, scenario)


def test_blob_of_another_repository_is_unknown(tmp_path: Path) -> None:
    async def scenario(client):
        d = await push_blob(client, "one", DATA)
        r = await client.get(f"/v2/two/blobs/{d}")
        assert r.status == 404
        assert await errors(r) == ["BLOB_UNKNOWN"]

    run(tmp_path, scenario)


def test_chunked_upload_in_order_with_status_and_final_chunk(tmp_path: Path) -> None:
    async def scenario(client):
        r = await client.post("/v2/app/blobs/uploads/")
        assert r.status == 202
        location, uuid = r.headers["Location"], r.headers["Docker-Upload-UUID"]
        assert location.endswith(uuid) and r.headers["Range"] == "0-0"
        r = await client.patch(location, data=DATA[:5], headers={"Content-Range": "0-4"})
        assert r.status == 202 and r.headers["Range"] == "0-4"
        r = await client.patch(location, data=DATA[5:10])  # streamed: no Content-Range
        assert r.status == 202 and r.headers["Range"] == "0-9"
        r = await client.get(location)
        assert r.status == 204 and r.headers["Range"] == "0-9"
        r = await client.put(location, params={"digest": digest(DATA)}, data=DATA[10:])
        assert r.status == 201, await r.text()
        assert r.headers["Location"] == f"/v2/app/blobs/{digest(DATA)}"
        got = await client.get(r.headers["Location"])
        assert await got.read() == DATA
        assert (await client.get(location)).status == 404

    run(tmp_path, scenario)
    assert list((tmp_path / "uploads").iterdir()) == []


def test_chunk_out_of_order_is_416_and_keeps_the_session(tmp_path: Path) -> None:
    async def scenario(client):
        location = (await client.post("/v2/app/blobs/uploads/")).headers["Location"]
        await client.patch(location, data=DATA[:5], headers={"Content-Range": "0-4"})
        for bad in ("6-9", "0-4", "5-3", "junk"):
            r = await client.patch(location, data=b"x" * 4, headers={"Content-Range": bad})
            assert r.status == 416, bad
            assert r.headers["Range"] == "0-4"
        r = await client.patch(location, data=b"abc", headers={"Content-Range": "5-9"})
        assert r.status == 416  # length disagrees with the range
        r = await client.get(location)
        assert r.headers["Range"] == "0-4"

    run(tmp_path, scenario)


def test_digest_mismatch_stores_nothing(tmp_path: Path) -> None:
    async def scenario(client):
        location = (await client.post("/v2/app/blobs/uploads/")).headers["Location"]
        await client.patch(location, data=DATA)
        r = await client.put(location, params={"digest": digest(b"other")})
        assert r.status == 400
        assert await errors(r) == ["DIGEST_INVALID"]
        assert (await client.get(location)).status == 404
        r = await client.post(
            "/v2/app/blobs/uploads/", params={"digest": digest(b"other")}, data=DATA
        )
        assert await errors(r) == ["DIGEST_INVALID"]

    run(tmp_path, scenario)
    assert blob_files(tmp_path) == []
    assert list((tmp_path / "uploads").iterdir()) == []


@pytest.mark.parametrize("text", ["sha512:" + "a" * 128, "md5:abc", "sha256:xyz", "nodigest"])
def test_unknown_or_malformed_digest_is_digest_invalid(tmp_path: Path, text: str) -> None:
    async def scenario(client):
        r = await client.post("/v2/app/blobs/uploads/", params={"digest": text}, data=DATA)
        assert r.status == 400
        assert await errors(r) == ["DIGEST_INVALID"]
        r = await client.head(f"/v2/app/blobs/{text}")
        assert r.status == 400

    run(tmp_path, scenario)
    assert blob_files(tmp_path) == []


def test_put_without_digest_is_refused(tmp_path: Path) -> None:
    async def scenario(client):
        location = (await client.post("/v2/app/blobs/uploads/")).headers["Location"]
        r = await client.put(location)
        assert await errors(r) == ["DIGEST_INVALID"]

    run(tmp_path, scenario)


def test_cancel_removes_the_session(tmp_path: Path) -> None:
    async def scenario(client):
        location = (await client.post("/v2/app/blobs/uploads/")).headers["Location"]
        await client.patch(location, data=DATA)
        assert (await client.delete(location)).status == 204
        r = await client.get(location)
        assert r.status == 404
        assert await errors(r) == ["BLOB_UPLOAD_UNKNOWN"]
        assert (await client.get("/v2/app/blobs/uploads/not-a-uuid")).status == 404
        assert (await client.get(location.replace("/app/", "/other/"))).status == 404

    run(tmp_path, scenario)
    assert list((tmp_path / "uploads").iterdir()) == []


def test_cross_repository_mount(tmp_path: Path) -> None:
    async def scenario(client):
        d = await push_blob(client, "src", DATA)
        r = await client.post("/v2/dst/blobs/uploads/", params={"mount": d, "from": "src"})
        assert r.status == 201
        assert r.headers["Docker-Content-Digest"] == d
        assert (await client.head(f"/v2/dst/blobs/{d}")).status == 200
        missing = digest(b"missing")
        r = await client.post("/v2/dst/blobs/uploads/", params={"mount": missing, "from": "src"})
        assert r.status == 202  # falls back to a new session
        assert "Docker-Upload-UUID" in r.headers

    run(tmp_path, scenario)
    assert blob_files(tmp_path) == [digest(DATA).removeprefix("sha256:")]


def test_blob_delete_unlinks_it_from_the_repository(tmp_path: Path) -> None:
    async def scenario(client):
        d = await push_blob(client, "app", DATA)
        assert (await client.delete(f"/v2/app/blobs/{d}")).status == 202
        assert (await client.head(f"/v2/app/blobs/{d}")).status == 404
        assert (await client.delete(f"/v2/app/blobs/{d}")).status == 404

    run(tmp_path, scenario)


def test_body_over_the_limit_is_413_and_stores_nothing(tmp_path: Path) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"x" * 8

    async def scenario(client):
        big = b"y" * 40
        r = await client.post("/v2/app/blobs/uploads/", params={"digest": digest(big)}, data=big)
        assert r.status == 413
        assert await errors(r) == ["SIZE_INVALID"]
        location = (await client.post("/v2/app/blobs/uploads/")).headers["Location"]
        await client.patch(location, data=b"z" * 8)
        r = await client.patch(location, data=chunks())  # chunked: no Content-Length
        assert r.status == 413
        r = await client.get(location)
        assert r.headers["Range"] == "0-7"  # the failed chunk left nothing behind

    run(tmp_path, scenario, max_body=16)
    assert blob_files(tmp_path) == []


def test_upload_session_survives_a_restart(tmp_path: Path) -> None:
    state: dict[str, str] = {}

    async def first(client):
        location = (await client.post("/v2/app/blobs/uploads/")).headers["Location"]
        await client.patch(location, data=DATA[:6], headers={"Content-Range": "0-5"})
        state["location"] = location

    async def second(client):
        location = state["location"]
        assert (await client.get(location)).headers["Range"] == "0-5"
        r = await client.put(location, params={"digest": digest(DATA)}, data=DATA[6:])
        assert r.status == 201, await r.text()

    run(tmp_path, first)
    run(tmp_path, second)
    assert blob_files(tmp_path) == [digest(DATA).removeprefix("sha256:")]


def test_unsupported_method_and_unknown_path(tmp_path: Path) -> None:
    async def scenario(client):
        r = await client.patch("/v2/app/tags/list")
        assert r.status == 405
        assert await errors(r) == ["UNSUPPORTED"]
        assert (await client.get("/v3/")).status == 404

    run(tmp_path, scenario)


def test_app_creates_its_layout(tmp_path: Path) -> None:
    make_app_root = tmp_path / "new"
    from manager.registry.app import Config

    make_app(Config(root=make_app_root))
    for sub in ("blobs/sha256", "repositories", "uploads"):
        assert (make_app_root / sub).is_dir()

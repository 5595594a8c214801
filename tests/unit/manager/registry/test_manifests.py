"""Manifest endpoints, repository names, and the tag and catalog listings."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.unit.manager.registry.harness import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    digest,
    errors,
    manifest,
    push_blob,
    push_image,
    run,
)

pytestmark = pytest.mark.unit


async def raw_request(client, method: str, path: str) -> tuple[int, bytes]:
    """One request with its path sent as is (aiohttp's client would resolve `..`)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n"
    writer.write(head.encode() + b"\r\n{}")
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def test_manifest_put_get_head_by_tag_and_digest(tmp_path: Path) -> None:
    async def scenario(client):
        d = await push_image(client, "lib/app", "v1")
        for reference in ("v1", d):
            r = await client.get(f"/v2/lib/app/manifests/{reference}")
            assert r.status == 200
            assert r.headers["Content-Type"] == OCI_MANIFEST
            assert r.headers["Docker-Content-Digest"] == d
            assert digest(await r.read()) == d
        head = await client.head("/v2/lib/app/manifests/v1", headers={"Accept": DOCKER_MANIFEST})
        assert head.status == 200
        assert head.headers["Docker-Content-Digest"] == d
        assert int(head.headers["Content-Length"]) > 0

    run(tmp_path, scenario)


def test_put_answers_with_location_and_digest(tmp_path: Path) -> None:
    async def scenario(client):
        config = await push_blob(client, "app", b"{}")
        body = manifest(config, [], DOCKER_MANIFEST)
        r = await client.put(
            f"/v2/app/manifests/{digest(body)}",
            data=body,
            headers={"Content-Type": DOCKER_MANIFEST},
        )
        assert r.status == 201, await r.text()
        assert r.headers["Location"] == f"/v2/app/manifests/{digest(body)}"
        assert r.headers["Docker-Content-Digest"] == digest(body)
        got = await client.get(f"/v2/app/manifests/{digest(body)}")
        assert got.headers["Content-Type"] == DOCKER_MANIFEST

    run(tmp_path, scenario)


def test_manifest_referencing_a_missing_blob_stores_nothing(tmp_path: Path) -> None:
    async def scenario(client):
        config = await push_blob(client, "app", b"{}")
        body = manifest(config, [digest(b"never pushed")])
        r = await client.put(
            "/v2/app/manifests/v1", data=body, headers={"Content-Type": OCI_MANIFEST}
        )
        assert r.status == 400
        assert await errors(r) == ["MANIFEST_BLOB_UNKNOWN"]
        assert (await client.get("/v2/app/manifests/v1")).status == 404

    run(tmp_path, scenario)
    assert not (tmp_path / "repositories" / "app" / "_manifests").exists()


def test_digest_reference_must_match_the_body(tmp_path: Path) -> None:
    async def scenario(client):
        config = await push_blob(client, "app", b"{}")
        body = manifest(config, [])
        headers = {"Content-Type": OCI_MANIFEST}
        for reference, code in ((digest(b"other"), "DIGEST_INVALID"), ("-bad", "TAG_INVALID")):
            r = await client.put(f"/v2/app/manifests/{reference}", data=body, headers=headers)
            assert r.status == 400
            assert await errors(r) == [code]

    run(tmp_path, scenario)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"not json", OCI_MANIFEST),
        (b"[]", OCI_MANIFEST),
        (b'{"schemaVersion": 2}', "text/plain"),
        (b'{"schemaVersion": 2, "layers": []}', OCI_MANIFEST),
        (json.dumps({"mediaType": OCI_INDEX, "manifests": []}).encode(), OCI_MANIFEST),
    ],
)
def test_invalid_manifests(tmp_path: Path, body: bytes, content_type: str) -> None:
    async def scenario(client):
        r = await client.put(
            "/v2/app/manifests/v1", data=body, headers={"Content-Type": content_type}
        )
        assert r.status == 400
        assert await errors(r) == ["MANIFEST_INVALID"]

    run(tmp_path, scenario)


def test_index_needs_its_child_manifests(tmp_path: Path) -> None:
    async def scenario(client):
        child = await push_image(client, "app", "amd64")
        for children, status in (([digest(b"nope")], 400), ([child], 201)):
            descriptors = [{"mediaType": OCI_MANIFEST, "digest": d, "size": 1} for d in children]
            body = json.dumps(
                {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
            ).encode()
            r = await client.put(
                "/v2/app/manifests/multi", data=body, headers={"Content-Type": OCI_INDEX}
            )
            assert r.status == status, await r.text()
        r = await client.get("/v2/app/manifests/multi", headers={"Accept": OCI_MANIFEST})
        assert r.headers["Content-Type"] == OCI_INDEX  # stored bytes, stored type

    run(tmp_path, scenario)


def test_manifest_over_4mib_is_413(tmp_path: Path) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b" " * (1 << 20)

    async def scenario(client):
        headers = {"Content-Type": OCI_MANIFEST}
        sized = io.BytesIO(b" " * ((4 << 20) + 1))
        for body in (sized, chunks()):  # with Content-Length, then chunked
            r = await client.put("/v2/app/manifests/v1", data=body, headers=headers)
            assert r.status == 413
            assert await errors(r) == ["SIZE_INVALID"]

    run(tmp_path, scenario)


def test_delete_tag_then_revision(tmp_path: Path) -> None:
    async def scenario(client):
        d = await push_image(client, "app", "v1")
        r = await client.put(
            "/v2/app/manifests/v2",
            data=await (await client.get("/v2/app/manifests/v1")).read(),
            headers={"Content-Type": OCI_MANIFEST},
        )
        assert r.status == 201
        assert (await client.delete("/v2/app/manifests/v1")).status == 202
        assert (await client.get("/v2/app/manifests/v1")).status == 404
        assert (await client.get(f"/v2/app/manifests/{d}")).status == 200
        assert (await client.delete(f"/v2/app/manifests/{d}")).status == 202
        r = await client.get("/v2/app/manifests/v2")
        assert await errors(r) == ["MANIFEST_UNKNOWN"]
        assert (await client.get(f"/v2/app/manifests/{d}")).status == 404

    run(tmp_path, scenario)


@pytest.mark.parametrize(
    "name", ["a/../b", "..", "Upper/case", "a" * 256, "a//b", "-a", "a_", "_layers/x"]
)
def test_invalid_names(tmp_path: Path, name: str) -> None:
    async def scenario(client):
        for method, path in (
            ("GET", f"/v2/{name}/tags/list"),
            ("PUT", f"/v2/{name}/manifests/v1"),
            ("POST", f"/v2/{name}/blobs/uploads/"),
            ("HEAD", f"/v2/{name}/blobs/{digest(b'x')}"),
        ):
            status, body = await raw_request(client, method, path)
            assert status == 400, (method, path)
            if method != "HEAD":
                assert json.loads(body)["errors"][0]["code"] == "NAME_INVALID"

    run(tmp_path, scenario)
    assert list((tmp_path / "repositories").iterdir()) == []


def test_longest_valid_name_and_unknown_repository(tmp_path: Path) -> None:
    async def scenario(client):
        name = "/".join(["a" * 127, "b" * 127])
        assert len(name) == 255
        r = await client.get(f"/v2/{name}/tags/list")
        assert r.status == 404
        assert await errors(r) == ["NAME_UNKNOWN"]
        await push_image(client, name, "v1")
        r = await client.get(f"/v2/{name}/tags/list")
        assert await r.json() == {"name": name, "tags": ["v1"]}

    run(tmp_path, scenario)


def test_tags_list_pagination(tmp_path: Path) -> None:
    async def scenario(client):
        for tag in ("e", "a", "c", "b", "d"):
            await push_image(client, "app", tag)
        r = await client.get("/v2/app/tags/list")
        assert (await r.json())["tags"] == ["a", "b", "c", "d", "e"]
        seen, url = [], "/v2/app/tags/list?n=2"
        while url:
            r = await client.get(url)
            seen.append((await r.json())["tags"])
            link = r.headers.get("Link", "")
            url = link[1 : link.index(">")] if link else ""
        assert seen == [["a", "b"], ["c", "d"], ["e"]]
        r = await client.get("/v2/app/tags/list", params={"n": "x"})
        assert await errors(r) == ["PAGINATION_NUMBER_INVALID"]

    run(tmp_path, scenario)


def test_catalog_pagination(tmp_path: Path) -> None:
    async def scenario(client):
        for name in ("lib/b", "a", "lib/a", "z/y/x"):
            await push_image(client, name, "v1")
        await push_blob(client, "blob-only", b"x")  # no manifest: not listed
        r = await client.get("/v2/_catalog")
        assert await r.json() == {"repositories": ["a", "lib/a", "lib/b", "z/y/x"]}
        r = await client.get("/v2/_catalog", params={"n": "2"})
        assert (await r.json())["repositories"] == ["a", "lib/a"]
        assert r.headers["Link"] == '</v2/_catalog?last=lib/a&n=2>; rel="next"'
        r = await client.get("/v2/_catalog", params={"n": "2", "last": "lib/a"})
        assert (await r.json())["repositories"] == ["lib/b", "z/y/x"]
        assert "Link" not in r.headers

    run(tmp_path, scenario)

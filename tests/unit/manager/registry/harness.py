"""Runs a scenario against the registry app on a loopback test server, and pushes the
small blobs and images the scenarios need."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from manager.registry.app import Config, make_app

Scenario = Callable[[TestClient[Any, Any]], Awaitable[None]]
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def run(root: Path, scenario: Scenario, **config: Any) -> None:
    async def main() -> None:
        async with TestClient(TestServer(make_app(Config(root=root, **config)))) as client:
            await asyncio.wait_for(scenario(client), timeout=30)

    asyncio.run(main())


def digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


async def errors(response: Any) -> list[str]:
    body = await response.json()
    return [e["code"] for e in body["errors"]]


async def push_blob(client: TestClient[Any, Any], name: str, data: bytes) -> str:
    d = digest(data)
    r = await client.post(f"/v2/{name}/blobs/uploads/", params={"digest": d}, data=data)
    assert r.status == 201, await r.text()
    return d


def manifest(config: str, layers: list[str], media_type: str = OCI_MANIFEST) -> bytes:
    def desc(d: str) -> dict[str, Any]:
        return {"mediaType": "application/octet-stream", "digest": d, "size": 1}

    document = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": desc(config),
        "layers": [desc(d) for d in layers],
    }
    return json.dumps(document).encode()


async def push_image(
    client: TestClient[Any, Any], name: str, tag: str, media_type: str = OCI_MANIFEST
) -> str:
    config = await push_blob(client, name, b'{"os":"linux"}')
    layer = await push_blob(client, name, b"layer-" + tag.encode())
    body = manifest(config, [layer], media_type)
    r = await client.put(
        f"/v2/{name}/manifests/{tag}", data=body, headers={"Content-Type": media_type}
    )
    assert r.status == 201, await r.text()
    return digest(body)

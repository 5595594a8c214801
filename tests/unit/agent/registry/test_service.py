"""pull and push logic over a fake registry: reference resolution, platform choice,
digest verification leaving nothing behind, and a push → pull round trip."""

from __future__ import annotations

import functools
import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent.engine import EngineOptions
from agent.images import oci
from agent.images.blobs import Descriptor, Digest
from agent.images.reference import parse_reference
from agent.images.store import ImageStore
from agent.registry import service
from agent.registry.client import FetchedManifest, RegistryClient
from api import engine_pb2
from api.errors import InvalidArgument, NotFound, PyswarmError

from .fake import FakeRegistry, digest_of

pytestmark = pytest.mark.unit
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="unpacking layers chowns files")


@pytest.mark.parametrize(
    ("text", "default", "registry", "repository"),
    [
        ("busybox", "docker.io", "docker.io", "library/busybox"),
        ("docker.io/library/busybox:1", "docker.io", "docker.io", "library/busybox"),
        ("team/app", "docker.io", "docker.io", "team/app"),
        ("busybox", "127.0.0.1:5000", "127.0.0.1:5000", "library/busybox"),
        ("localhost:5000/app@sha256:" + "a" * 64, "", "localhost:5000", "app"),
        ("reg.example/a/b/c:2", "", "reg.example", "a/b/c"),
    ],
)
def test_target_of(text: str, default: str, registry: str, repository: str) -> None:
    target = service.target_of(parse_reference(text), default_registry=default)
    assert (target.registry, target.repository) == (registry, repository)


def test_unqualified_names_without_a_default_registry_are_refused() -> None:
    with pytest.raises(NotFound) as caught:
        service.target_of(parse_reference("busybox"), default_registry="")
    assert caught.value.message == (
        "pull access denied for busybox: remote pulls of unqualified names are turned off "
        "(daemon --default-registry)"
    )


def entry(arch: str, os_: str = "linux", variant: str = "") -> oci.IndexEntry:
    descriptor = Descriptor(digest=Digest("sha256:" + arch[0] * 64), size=1)
    return oci.IndexEntry(
        descriptor, oci.MediaType.OCI_MANIFEST.value, oci.Platform(os_, arch, variant)
    )


def test_choose_platform() -> None:
    entries = [entry("arm64", variant="v8"), entry("amd64", os_="windows"), entry("amd64")]
    assert service.choose_platform(entries, wanted=oci.Platform("linux", "amd64")) is entries[2]
    assert service.choose_platform(entries, wanted=oci.Platform("linux", "arm64")) is entries[0]
    with pytest.raises(NotFound, match="no matching manifest for linux/s390x"):
        service.choose_platform(entries, wanted=oci.Platform("linux", "s390x"))


# ---- against the fake registry -------------------------------------------------------


def fake_engine(tmp_path: Path, name: str) -> Any:
    options = EngineOptions(data_root=tmp_path, default_registry="")
    return SimpleNamespace(images=ImageStore(tmp_path / name), options=options)


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> FakeRegistry:
    fake = FakeRegistry()
    client = functools.partial(RegistryClient, transport=fake.transport)
    monkeypatch.setattr(service, "RegistryClient", client)
    return fake


def layer_tar() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    return out.getvalue()


def publish(registry: FakeRegistry, *, tag: str) -> tuple[str, bytes]:
    """An image (one uncompressed layer) in the fake registry; → (layer digest, config)."""
    layer = layer_tar()
    config = oci.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [digest_of(layer)]},
        }
    )
    registry.blobs[digest_of(layer)] = layer
    registry.blobs[digest_of(config)] = config
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.MediaType.DOCKER_MANIFEST.value,
        "config": {
            "mediaType": oci.MediaType.DOCKER_CONFIG.value,
            "digest": digest_of(config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": oci.MediaType.DOCKER_LAYER.value,
                "digest": digest_of(layer),
                "size": len(layer),
            }
        ],
    }
    registry.add_manifest(tag, manifest, oci.MediaType.DOCKER_MANIFEST.value)
    return digest_of(layer), config


def pull(engine: Any, reference: str) -> list[Any]:
    request = engine_pb2.ImagePullRequest(reference=reference)
    return list(service.pull(engine, request, cancelled=lambda: False))


def test_a_corrupt_layer_fails_and_leaves_no_blob(tmp_path: Path, registry: FakeRegistry) -> None:
    layer, _ = publish(registry, tag="1")
    registry.corrupt.add(layer)
    engine = fake_engine(tmp_path, "store")
    with pytest.raises(InvalidArgument, match="digest mismatch"):
        pull(engine, "reg.example/test/app:1")
    assert list(engine.images.blobs.digests()) == []
    assert engine.images.list() == []
    assert not [p for p in (engine.images.blobs.root / "sha256").iterdir()]


@needs_root
def test_pull_through_an_index_then_push_elsewhere(tmp_path: Path, registry: FakeRegistry) -> None:
    publish(registry, tag="amd")
    amd64, _ = registry.manifests["amd"]
    index = {
        "schemaVersion": 2,
        "mediaType": oci.MediaType.OCI_INDEX.value,
        "manifests": [
            {
                "mediaType": oci.MediaType.DOCKER_MANIFEST.value,
                "digest": digest_of(amd64),
                "size": len(amd64),
                "platform": {"os": "linux", "architecture": oci.host_platform().architecture},
            }
        ],
    }
    index_digest = registry.add_manifest("multi", index, oci.MediaType.OCI_INDEX.value)
    engine = fake_engine(tmp_path, "store")
    messages = pull(engine, "reg.example/test/app:multi")
    statuses = [m.status for m in messages]
    assert statuses[-2] == f"Digest: {index_digest}"  # docker shows the digest pulled by
    assert statuses[-1] == "Status: Downloaded newer image for reg.example/test/app:multi"
    assert "Pull complete" in statuses
    image = engine.images.resolve("reg.example/test/app:multi")
    assert image.manifest_digest == digest_of(amd64)
    assert [m.status for m in pull(engine, "reg.example/test/app:multi")][1] == "Already exists"

    engine.images.tag("reg.example/test/app:multi", "reg.example/copy/app:2")
    request = engine_pb2.ImagePushRequest(reference="reg.example/copy/app:2")
    pushed = list(service.push(engine, request, cancelled=lambda: False))
    assert [m.status for m in pushed][-1] == f"2: digest: {digest_of(amd64)} size: {len(amd64)}"
    assert registry.manifests["2"][0] == amd64
    assert "Layer already exists" in [m.status for m in pushed]  # same registry, same blob


def test_credentials_go_only_to_their_registry() -> None:
    auth = engine_pb2.RegistryAuth(server="docker.io", username="alice", password="pw")
    assert service.credentials_of(auth, registry="docker.io") is not None
    assert service.credentials_of(auth, registry="127.0.0.1:5000") is None
    anonymous = engine_pb2.RegistryAuth(server="docker.io")
    assert service.credentials_of(anonymous, registry="docker.io") is None


def test_transfers_stop_the_other_jobs_after_a_failure() -> None:
    transfers = service.Transfers(cancelled=lambda: False)
    started: list[int] = []

    def failing() -> None:
        raise NotFound("gone")

    def slow(index: int) -> None:
        started.append(index)
        for done in range(1, 1 << 20):
            transfers.counter(f"layer{index}", "Downloading", 1 << 40)(done << 20)

    jobs: list[Callable[[], None]] = [failing, *(functools.partial(slow, i) for i in range(5))]
    with pytest.raises(NotFound, match="gone"):
        list(transfers.run(jobs))
    assert len(started) <= 5


def test_transfers_stop_when_cancelled() -> None:
    cancelled: list[bool] = []
    transfers = service.Transfers(cancelled=lambda: bool(cancelled))

    def job() -> None:
        for done in range(1, 1 << 30):
            transfers.counter("layer", "Downloading", 1 << 60)(done << 20)

    stream = transfers.run([job])
    next(stream)
    cancelled.append(True)
    with pytest.raises(PyswarmError, match="cancelled"):
        list(stream)


def test_media_type_from_document_then_header_then_shape() -> None:
    def fetched(document: dict[str, Any], header: str) -> Any:
        data = oci.dumps(document)
        return FetchedManifest(data=data, media_type=header, digest=digest_of(data))

    docker = oci.MediaType.DOCKER_MANIFEST.value
    assert service._media_type(fetched({"mediaType": docker}, "application/json")) == docker
    assert service._media_type(fetched({}, docker)) == docker
    assert service._media_type(fetched({"manifests": []}, "application/json")) == (
        oci.MediaType.OCI_INDEX.value
    )
    assert service._media_type(fetched({"layers": []}, "")) == oci.MediaType.OCI_MANIFEST.value

"""save and load: the archive layout, round trips, both formats, and bad archives."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.images import oci
from agent.images.archive import load, save
from agent.images.blobs import digest_hex
from agent.images.store import Image, ImageStore
from api.errors import InvalidArgument, NotFound

from .tars import Entry, build, file, rootfs, sha256, snapshot, symlink

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(os.geteuid() != 0, reason="unpacking layers chowns files"),
]

EMPTY_STORE: dict[str, list[str]] = {"blobs": [], "layers": [], "images": [], "tags": []}


@pytest.fixture
def source(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "source")


@pytest.fixture
def target(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "target")


def contents(store: ImageStore) -> dict[str, list[str]]:
    tags_file = store.root / "repositories.json"
    return {
        "blobs": sorted(os.listdir(store.root / "blobs" / "sha256")),
        "layers": sorted(os.listdir(store.root / "layers")),
        "images": sorted(os.listdir(store.root / "images")),
        "tags": sorted(json.loads(tags_file.read_bytes())) if tags_file.exists() else [],
    }


def saved(store: ImageStore, *references: str) -> bytes:
    out = io.BytesIO()
    save(store, references, out)
    return out.getvalue()


def members(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def import_busybox(store: ImageStore, reference: str = "busybox") -> Image:
    return store.import_rootfs(io.BytesIO(rootfs()), reference, changes=['CMD ["sh"]'])


def archive_of(files: dict[str, bytes], *extra: Entry) -> bytes:
    return build(*(file(name, data) for name, data in files.items()), *extra)


# ---- save ------------------------------------------------------------------------------


def test_save_writes_an_oci_layout_and_a_docker_archive(source: ImageStore) -> None:
    image = import_busybox(source)
    source.tag("busybox", "localhost:5000/box:2")
    files = members(saved(source, "busybox", "localhost:5000/box:2"))

    blob_paths = {f"blobs/sha256/{digest_hex(d)}" for d in (image.id, image.manifest_digest)}
    blob_paths |= {f"blobs/sha256/{digest_hex(layer.digest)}" for layer in image.layers}
    assert set(files) == {"oci-layout", "index.json", "manifest.json", "repositories"} | blob_paths
    for path in blob_paths:
        assert sha256(files[path]) == "sha256:" + path.rsplit("/", 1)[1]
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}

    index = json.loads(files["index.json"])
    assert [m["annotations"] for m in index["manifests"]] == [
        {
            "io.containerd.image.name": "docker.io/library/busybox:latest",
            "org.opencontainers.image.ref.name": "latest",
        },
        {
            "io.containerd.image.name": "localhost:5000/box:2",
            "org.opencontainers.image.ref.name": "2",
        },
    ]
    assert {m["digest"] for m in index["manifests"]} == {image.manifest_digest}

    assert json.loads(files["manifest.json"]) == [
        {
            "Config": f"blobs/sha256/{digest_hex(image.id)}",
            "RepoTags": ["busybox:latest", "localhost:5000/box:2"],
            "Layers": [f"blobs/sha256/{digest_hex(layer.digest)}" for layer in image.layers],
        }
    ]
    top = digest_hex(image.layers[-1].digest)
    assert json.loads(files["repositories"]) == {
        "busybox": {"latest": top},
        "localhost:5000/box": {"2": top},
    }


def test_docker_archive_layers_are_readable_as_tar(source: ImageStore) -> None:
    image = import_busybox(source)
    files = members(saved(source, "busybox"))
    (layer_path,) = json.loads(files["manifest.json"])[0]["Layers"]
    with tarfile.open(fileobj=io.BytesIO(files[layer_path])) as layer:
        assert "etc/hostname" in layer.getnames()
    assert sha256(gzip.decompress(files[layer_path])) == image.layers[0].diff_id


def test_save_is_reproducible(source: ImageStore) -> None:
    import_busybox(source)
    assert saved(source, "busybox") == saved(source, "busybox")


def test_save_unknown_or_nothing(source: ImageStore) -> None:
    with pytest.raises(NotFound, match="No such image: ghost"):
        saved(source, "ghost")
    with pytest.raises(InvalidArgument, match="no images to save"):
        saved(source)


# ---- round trips ---------------------------------------------------------------------------


def test_round_trip_keeps_ids_tags_and_layers(source: ImageStore, target: ImageStore) -> None:
    image = import_busybox(source)
    other = source.import_rootfs(io.BytesIO(rootfs(file("x", b"x"))), "other:1")
    archive = saved(source, "busybox", "other:1")

    lines = load(target, io.BytesIO(archive))

    assert lines == ["Loaded image: busybox:latest", "Loaded image: other:1"]
    for original in (image, other):
        loaded = target.resolve(original.id)
        assert loaded.repo_tags == original.repo_tags
        assert loaded.manifest_digest == original.manifest_digest
        assert loaded.layers == original.layers
        assert loaded.config == original.config
    (layer_dir,) = target.layer_dirs(target.resolve("busybox"))
    assert (layer_dir / "etc/hostname").read_bytes() == b"box\n"


def test_saved_by_id_loads_untagged(source: ImageStore, target: ImageStore) -> None:
    image = import_busybox(source)
    archive = saved(source, digest_hex(image.id)[:12])
    assert json.loads(members(archive)["manifest.json"])[0]["RepoTags"] is None
    assert load(target, io.BytesIO(archive)) == [f"Loaded image ID: {image.id}"]
    assert target.resolve(image.id).repo_tags == []


def test_loading_twice_is_harmless(source: ImageStore, target: ImageStore) -> None:
    import_busybox(source)
    archive = saved(source, "busybox")
    load(target, io.BytesIO(archive))
    before = contents(target)
    assert load(target, io.BytesIO(archive)) == ["Loaded image: busybox:latest"]
    assert contents(target) == before


def test_load_moves_a_tag_and_says_so(source: ImageStore, target: ImageStore) -> None:
    image = import_busybox(source)
    old = target.import_rootfs(io.BytesIO(rootfs(file("old", b"o"))), "busybox")
    assert load(target, io.BytesIO(saved(source, "busybox"))) == [
        f"The image busybox:latest already exists, renaming the old one with ID {old.id} "
        "to empty string",
        "Loaded image: busybox:latest",
    ]
    assert target.resolve("busybox").id == image.id
    assert target.resolve(old.id).repo_tags == []


def test_load_a_compressed_archive(source: ImageStore, target: ImageStore) -> None:
    image = import_busybox(source)
    load(target, io.BytesIO(gzip.compress(saved(source, "busybox"))))
    assert target.resolve("busybox").id == image.id


# ---- docker-archive (classic) ---------------------------------------------------------------


def classic_archive(layer: bytes, *, tags: list[str], symlinked: bool = False) -> bytes:
    config = oci.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]},
        }
    )
    v1 = "1" * 64
    layer_path = f"{v1}/layer.tar"
    files = {f"{digest_hex(sha256(config))}.json": config, f"{v1}/VERSION": b"1.0"}
    extra = []
    if symlinked:
        # docker 25 writes the legacy layer as a symlink to the blob
        files[f"blobs/sha256/{digest_hex(sha256(layer))}"] = layer
        extra.append(symlink(layer_path, f"../blobs/sha256/{digest_hex(sha256(layer))}"))
    else:
        files[layer_path] = layer
    files["manifest.json"] = json.dumps(
        [
            {
                "Config": f"{digest_hex(sha256(config))}.json",
                "RepoTags": tags,
                "Layers": [layer_path],
            }
        ]
    ).encode()
    return archive_of(files, *extra)


@pytest.mark.parametrize("symlinked", [False, True], ids=["plain", "symlinked"])
def test_load_classic_docker_archive(target: ImageStore, symlinked: bool) -> None:
    layer = rootfs()
    archive = classic_archive(layer, tags=["docker.io/library/app:1"], symlinked=symlinked)

    assert load(target, io.BytesIO(archive)) == ["Loaded image: app:1"]

    image = target.resolve("app:1")
    (stored,) = image.layers
    assert stored.diff_id == sha256(layer)
    assert stored.media_type == oci.MediaType.OCI_LAYER_GZIP
    assert gzip.decompress(target.blobs.path(stored.digest).read_bytes()) == layer
    assert image.config["config"]["Cmd"] == ["sh"]
    # only what the image references is kept: the uncompressed layer is not
    assert contents(target)["blobs"] == sorted(
        digest_hex(d) for d in (image.id, image.manifest_digest, stored.digest)
    )


# ---- OCI layouts ------------------------------------------------------------------------------


def oci_image(
    layer: bytes, *, diff_id: str | None = None
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The blobs of a one-layer image, and its manifest descriptor."""
    blob = gzip.compress(layer, mtime=0)
    host = oci.host_platform()
    config = oci.dumps(
        {
            "architecture": host.architecture,
            "os": host.os,
            "rootfs": {"type": "layers", "diff_ids": [diff_id or sha256(layer)]},
        }
    )
    manifest = oci.dumps(
        {
            "schemaVersion": 2,
            "mediaType": oci.MediaType.OCI_MANIFEST,
            "config": {
                "mediaType": oci.MediaType.OCI_CONFIG,
                "digest": sha256(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": oci.MediaType.OCI_LAYER_GZIP,
                    "digest": sha256(blob),
                    "size": len(blob),
                }
            ],
        }
    )
    blobs = {f"blobs/sha256/{digest_hex(sha256(data))}": data for data in (blob, config, manifest)}
    descriptor = {
        "mediaType": oci.MediaType.OCI_MANIFEST,
        "digest": sha256(manifest),
        "size": len(manifest),
    }
    return blobs, descriptor


def oci_layout(blobs: dict[str, bytes], *descriptors: dict[str, Any]) -> bytes:
    index = {"schemaVersion": 2, "manifests": list(descriptors)}
    return archive_of(
        {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', **blobs, "index.json": oci.dumps(index)}
    )


def named(descriptor: dict[str, Any], ref_name: str) -> dict[str, Any]:
    return {**descriptor, "annotations": {oci.ANNOTATION_REF_NAME: ref_name}}


def test_oci_ref_names(target: ImageStore) -> None:
    blobs, descriptor = oci_image(rootfs())
    manifest = json.loads(blobs[f"blobs/sha256/{digest_hex(descriptor['digest'])}"])
    # a bare tag names nothing (it is docker's ref.name); a whole reference does
    archive = oci_layout(blobs, named(descriptor, "app:1"), named(descriptor, "latest"))
    assert load(target, io.BytesIO(archive)) == ["Loaded image: app:1"]
    assert target.resolve("app:1").id == manifest["config"]["digest"]


def test_nested_index_picks_the_host_platform(target: ImageStore) -> None:
    host_blobs, host_descriptor = oci_image(rootfs())
    _, foreign_descriptor = oci_image(rootfs(file("arm", b"a")))  # its blobs are absent
    host = oci.host_platform()
    nested = oci.dumps(
        {
            "schemaVersion": 2,
            "mediaType": oci.MediaType.OCI_INDEX,
            "manifests": [
                {**foreign_descriptor, "platform": {"os": "linux", "architecture": "riscv64"}},
                {**host_descriptor, "platform": {"os": host.os, "architecture": host.architecture}},
            ],
        }
    )
    blobs = {**host_blobs, f"blobs/sha256/{digest_hex(sha256(nested))}": nested}
    index_descriptor = {
        "mediaType": oci.MediaType.OCI_INDEX,
        "digest": sha256(nested),
        "size": len(nested),
        "annotations": {oci.ANNOTATION_IMAGE_NAME: "docker.io/library/multi:1"},
    }
    assert load(target, io.BytesIO(oci_layout(blobs, index_descriptor))) == [
        "Loaded image: multi:1"
    ]
    assert target.resolve("multi:1").manifest_digest == host_descriptor["digest"]


# ---- bad archives -------------------------------------------------------------------------------


def corrupt_blob() -> bytes:
    blobs, descriptor = oci_image(rootfs())
    layer_path = next(p for p in blobs if blobs[p][:2] == b"\x1f\x8b")
    blobs[layer_path] = gzip.compress(rootfs(file("evil", b"e")), mtime=0)
    return oci_layout(blobs, named(descriptor, "x:1"))


def wrong_diff_id() -> bytes:
    blobs, descriptor = oci_image(rootfs(), diff_id=sha256(b"something else"))
    return oci_layout(blobs, named(descriptor, "x:1"))


def missing_layer() -> bytes:
    blobs, descriptor = oci_image(rootfs())
    del blobs[next(p for p in blobs if blobs[p][:2] == b"\x1f\x8b")]
    return oci_layout(blobs, named(descriptor, "x:1"))


def hostile_layer() -> bytes:
    blobs, descriptor = oci_image(rootfs(file("../../evil", b"e")))
    return oci_layout(blobs, named(descriptor, "x:1"))


def second_image_bad() -> bytes:
    good, good_descriptor = oci_image(rootfs())
    bad, bad_descriptor = oci_image(rootfs(file("b", b"b")), diff_id=sha256(b"wrong"))
    return oci_layout(
        {**good, **bad}, named(good_descriptor, "good:1"), named(bad_descriptor, "bad:1")
    )


def classic_wrong_diff_id() -> bytes:
    archive = members(classic_archive(rootfs(), tags=["x:1"]))
    layer_path = "1" * 64 + "/layer.tar"
    archive[layer_path] = rootfs(file("other", b"o"))
    return archive_of(archive)


def classic_wrong_layer_count() -> bytes:
    archive = members(classic_archive(rootfs(), tags=["x:1"]))
    manifest = json.loads(archive["manifest.json"])
    manifest[0]["Layers"].append(manifest[0]["Layers"][0])
    archive["manifest.json"] = json.dumps(manifest).encode()
    return archive_of(archive)


BAD: dict[str, tuple[Callable[[], bytes], str]] = {
    "not a tar": (lambda: b"\x01" * 4096, "not a valid tar"),
    "empty tar": (lambda: build(), "neither index.json nor manifest.json"),
    "blob named by another digest": (corrupt_blob, "blobs/sha256/.*: digest mismatch"),
    "wrong diff_id": (wrong_diff_id, "layer diff_id mismatch"),
    "missing layer": (missing_layer, "the archive has no blobs/sha256/"),
    "hostile layer": (hostile_layer, "layer entry escapes the root"),
    "second image bad": (second_image_bad, "layer diff_id mismatch"),
    "index not JSON": (lambda: archive_of({"index.json": b"{"}), "index.json is not valid JSON"),
    "index not an index": (lambda: archive_of({"index.json": b"{}"}), "not an image index"),
    "manifest.json not a list": (lambda: archive_of({"manifest.json": b"{}"}), "is not a list"),
    "classic wrong diff_id": (classic_wrong_diff_id, "layer diff_id mismatch"),
    "classic layer count": (classic_wrong_layer_count, "lists 2 layers, the config 1"),
    "bad tag": (lambda: classic_archive(rootfs(), tags=["Bad"]), "must be lowercase"),
}


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_a_bad_archive_loads_nothing(
    target: ImageStore, case: tuple[Callable[[], bytes], str]
) -> None:
    make, match = case
    with pytest.raises(InvalidArgument, match=f"^invalid archive: .*{match}"):
        load(target, io.BytesIO(make()))
    assert contents(target) == EMPTY_STORE
    assert target.list() == []


def test_hostile_member_names_are_never_written(tmp_path: Path, source: ImageStore) -> None:
    import_busybox(source)
    good = members(saved(source, "busybox"))
    archive = archive_of(
        {**good, "../evil": b"e", "/tmp-evil": b"e", "blobs/../../evil2": b"e"},
        symlink("blobs/sha256/escape", str(tmp_path)),
    )
    target = ImageStore(tmp_path / "target")
    before = snapshot(tmp_path, skip=target.root)
    assert load(target, io.BytesIO(archive)) == ["Loaded image: busybox:latest"]
    assert snapshot(tmp_path, skip=target.root) == before

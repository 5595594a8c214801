"""ImageStore: import, lookup, tags, rmi and prune with docker's semantics, on disk."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agent.images.blobs import Descriptor, Digest, digest_hex
from agent.images.store import Image, ImageStore
from agent.images.tarsafe import Limits
from api.errors import Conflict, EngineFailure, InvalidArgument, NotFound

from .tars import directory, file, rootfs, sha256, symlink

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(os.geteuid() != 0, reason="unpacking layers chowns files"),
]


def no_users(image_id: str) -> list[str]:
    return []


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "images")


def on_disk(store: ImageStore) -> dict[str, list[str]]:
    """Everything the store holds, temporary files included."""
    root = store.root
    return {
        "blobs": sorted(os.listdir(root / "blobs" / "sha256")),
        "layers": sorted(os.listdir(root / "layers")),
        "images": sorted(os.listdir(root / "images")),
        "tags": sorted(json.loads((root / "repositories.json").read_bytes()))
        if (root / "repositories.json").exists()
        else [],
        "root": sorted(os.listdir(root)),
    }


EMPTY = {"blobs": [], "layers": [], "images": [], "tags": [], "root": ["blobs", "images", "layers"]}


def import_image(store: ImageStore, reference: str | None, *, message: str = "") -> Image:
    """An image with a layer of its own."""
    data = rootfs(file(f"etc/unique-{reference}-{message}", b"u"))
    return store.import_rootfs(io.BytesIO(data), reference, message=message)


# ---- import ---------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_import_makes_a_one_layer_image(store: ImageStore, compress: bool) -> None:
    plain = rootfs()
    image = store.import_rootfs(
        io.BytesIO(gzip.compress(plain) if compress else plain), "busybox:1", message="hello"
    )

    assert image.repo_tags == ["busybox:1"]
    assert image.id == sha256(store.blobs.path(image.id).read_bytes())
    assert image.config["rootfs"] == {"type": "layers", "diff_ids": [sha256(plain)]}
    assert image.config["os"] == "linux" and image.config["architecture"]
    assert image.config["history"][0]["comment"] == "hello"
    (layer,) = image.layers
    assert layer.diff_id == sha256(plain)
    assert layer.media_type == "application/vnd.oci.image.layer.v1.tar+gzip"
    stored = store.blobs.path(layer.digest).read_bytes()
    assert sha256(stored) == layer.digest and len(stored) == layer.size == image.size
    assert gzip.decompress(stored) == plain

    manifest = json.loads(store.blobs.path(image.manifest_digest).read_bytes())
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["digest"] == image.id
    assert [entry["digest"] for entry in manifest["layers"]] == [layer.digest]


def test_the_same_rootfs_makes_the_same_layer_blob(store: ImageStore) -> None:
    first = store.import_rootfs(io.BytesIO(rootfs()), "a")
    second = store.import_rootfs(io.BytesIO(gzip.compress(rootfs())), "b")
    assert first.layers == second.layers
    assert len(on_disk(store)["layers"]) == 1


def test_import_unpacks_the_layer(store: ImageStore) -> None:
    image = store.import_rootfs(io.BytesIO(rootfs()), "busybox")
    (layer_dir,) = store.layer_dirs(image)
    assert layer_dir == store.root / "layers" / digest_hex(image.layers[0].diff_id)
    assert (layer_dir / "etc/hostname").read_bytes() == b"box\n"
    assert os.readlink(layer_dir / "bin/ash") == "sh"
    assert stat.S_IMODE((layer_dir / "bin/su").stat().st_mode) == 0o4755


def test_import_applies_changes(store: ImageStore) -> None:
    image = store.import_rootfs(
        io.BytesIO(rootfs()),
        "app",
        changes=['CMD ["sh"]', "ENV A=1", "WORKDIR /srv", "EXPOSE 80", "USER nobody"],
    )
    config = store.inspect("app")["Config"]
    assert config["Cmd"] == ["sh"]
    assert config["Env"] == ["A=1"]
    assert config["WorkingDir"] == "/srv"
    assert config["ExposedPorts"] == {"80/tcp": {}}
    assert config["User"] == "nobody"
    assert store.config_of(image)["config"]["Cmd"] == ["sh"]


def test_import_without_a_reference_is_dangling(store: ImageStore) -> None:
    image = store.import_rootfs(io.BytesIO(rootfs()), None)
    assert image.repo_tags == []
    assert store.resolve(image.id).id == image.id


@pytest.mark.parametrize(
    ("data", "reference", "changes", "match"),
    [
        (rootfs(file("../escape", b"x")), "x", (), "escapes the root"),
        (rootfs(symlink("lib", "/lib"), file("lib/x", b"x")), "x", (), "goes through a symlink"),
        (b"not a tar at all" * 64, "x", (), "not a valid tar"),
        (b"", "x", (), "not a valid tar"),
        (gzip.compress(rootfs())[:-30], "x", (), "corrupt"),
        (rootfs(), "Bad_Name", (), "invalid reference format"),
        (rootfs(), "x@sha256:" + "a" * 64, (), "refusing to create a tag with a digest"),
        (rootfs(), "x", ("RUN true",), "RUN is not a valid change command"),
    ],
)
def test_a_failed_import_leaves_nothing(
    store: ImageStore, data: bytes, reference: str, changes: tuple[str, ...], match: str
) -> None:
    with pytest.raises(InvalidArgument, match=match):
        store.import_rootfs(io.BytesIO(data), reference, changes=changes)
    assert on_disk(store) == EMPTY
    assert store.list() == []


def test_a_too_large_import_leaves_nothing(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images", limits=Limits(max_total_bytes=1 << 20))
    with pytest.raises(InvalidArgument, match="maximum of 1048576 bytes"):
        store.import_rootfs(io.BytesIO(rootfs(file("big", bytes(2 << 20)))), "big")
    assert on_disk(store) == EMPTY


# ---- add_image --------------------------------------------------------------------------


def test_add_image_refuses_a_config_that_does_not_match_the_layers(store: ImageStore) -> None:
    with store.lease() as lease:
        blob, diff_id = lease.put_layer(io.BytesIO(rootfs()))
        config = {"rootfs": {"type": "layers", "diff_ids": [sha256(b"other")]}}
        with pytest.raises(InvalidArgument, match="does not match its layers"):
            store.add_image(config, layers=[(blob, diff_id)])
        # a config and layer list that agree, but not with the layer's content
        with pytest.raises(InvalidArgument, match="diff_id mismatch"):
            store.add_image(config, layers=[(blob, Digest(sha256(b"other")))])
    assert on_disk(store) == EMPTY


def test_add_image_keeps_config_bytes_verbatim(store: ImageStore) -> None:
    with store.lease() as lease:
        blob, diff_id = lease.put_layer(io.BytesIO(rootfs()))
    # the lease ended with nothing referencing the blob: it is gone
    assert on_disk(store) == EMPTY
    with store.lease() as lease:
        blob, diff_id = lease.put_layer(io.BytesIO(rootfs()))
        config = b'{"rootfs": {"diff_ids": ["%s"], "type": "layers"}, "os": "linux"}' % (
            diff_id.encode()
        )
        image = store.add_image(config, layers=[(blob, diff_id)], reference="verbatim")
    assert image.id == sha256(config)
    assert store.blobs.path(image.id).read_bytes() == config


def test_add_image_refuses_a_missing_blob(store: ImageStore) -> None:
    missing = Descriptor(Digest(sha256(b"nothing")), 7)
    config = {"rootfs": {"type": "layers", "diff_ids": [sha256(b"x")]}}
    with pytest.raises(InvalidArgument, match="is missing"):
        store.add_image(config, layers=[(missing, Digest(sha256(b"x")))])
    assert on_disk(store) == EMPTY


# ---- resolve, tag, inspect ---------------------------------------------------------------


def test_resolve_by_every_kind_of_reference(store: ImageStore) -> None:
    image = import_image(store, "busybox")
    store.tag("busybox", "localhost:5000/team/app:v1")
    hexid = digest_hex(image.id)
    for ref in (
        "busybox",
        "busybox:latest",
        "docker.io/library/busybox:latest",
        "localhost:5000/team/app:v1",
        image.id,
        hexid,
        hexid[:12],
        hexid[:1],
        f"sha256:{hexid[:5]}",
        f"busybox@{image.manifest_digest}",
    ):
        assert store.resolve(ref).id == image.id, ref


@pytest.mark.parametrize(
    "ref", ["nothere", "busybox:other", "sha256:0000", "Busybox", "zz", f"other@sha256:{'a' * 64}"]
)
def test_resolve_unknown(store: ImageStore, ref: str) -> None:
    import_image(store, "busybox")
    with pytest.raises(NotFound, match=f"^No such image: {ref}$"):
        store.resolve(ref)


def test_tag_moves_and_reports_the_previous_image(store: ImageStore) -> None:
    first = import_image(store, "app:1")
    second = import_image(store, "app:2")
    assert store.tag("app:1", "app:latest") is None
    assert store.tag("app:2", "app:latest") == first.id
    assert store.resolve("app").id == second.id
    assert store.resolve("app:1").repo_tags == ["app:1"]


@pytest.mark.parametrize(
    ("target", "match"),
    [
        ("Upper", "must be lowercase"),
        ("x@sha256:" + "a" * 64, "digest reference"),
        ("a" * 64, "64-byte hexadecimal"),
    ],
)
def test_tag_refuses_invalid_targets(store: ImageStore, target: str, match: str) -> None:
    import_image(store, "busybox")
    with pytest.raises(InvalidArgument, match=match):
        store.tag("busybox", target)


def test_tag_of_an_unknown_source(store: ImageStore) -> None:
    with pytest.raises(NotFound, match="No such image: ghost"):
        store.tag("ghost", "x")


def test_inspect_has_dockers_fields(store: ImageStore) -> None:
    image = import_image(store, "busybox", message="imported")
    store.tag("busybox", "busybox:other")
    document = store.inspect("busybox")
    assert document["Id"] == image.id
    assert document["RepoTags"] == ["busybox:latest", "busybox:other"]
    assert document["RepoDigests"] == [f"busybox@{image.manifest_digest}"]
    assert document["Parent"] == ""
    assert document["Comment"] == "imported"
    assert document["Created"].endswith("Z")
    assert document["Os"] == "linux"
    assert document["Size"] == image.size
    assert document["RootFS"] == {"Type": "layers", "Layers": [image.layers[0].diff_id]}
    assert document["Config"] == {
        "User": "",
        "Env": None,
        "Cmd": None,
        "Entrypoint": None,
        "WorkingDir": "",
        "Volumes": None,
        "Labels": None,
    }


def test_list_is_newest_first(store: ImageStore) -> None:
    older = import_image(store, "a")
    newer = import_image(store, "b")
    assert [image.id for image in store.list()] == [newer.id, older.id]


def test_state_survives_a_restart(store: ImageStore) -> None:
    image = import_image(store, "busybox")
    store.tag("busybox", "again:1")
    reopened = ImageStore(store.root)
    assert reopened.list() == store.list()
    assert reopened.resolve("again:1").id == image.id


def test_restart_removes_temporary_leftovers(store: ImageStore) -> None:
    import_image(store, "busybox")
    before = on_disk(store)
    (store.root / "layers" / ".tmp-crashed").mkdir()
    (store.root / "images" / ".tmp-crashed").write_text("{")
    (store.root / "blobs" / "sha256" / ".tmp-crashed").write_text("x")
    ImageStore(store.root)
    assert on_disk(store) == before


# ---- layer_dirs -----------------------------------------------------------------------------


def test_layer_dirs_unpacks_missing_layers_again(store: ImageStore) -> None:
    image = import_image(store, "busybox")
    (layer_dir,) = store.layer_dirs(image)
    shutil.rmtree(layer_dir)
    assert store.layer_dirs(image) == [layer_dir]
    assert (layer_dir / "etc/hostname").read_bytes() == b"box\n"


def test_layer_dirs_reports_a_corrupt_blob_and_leaves_nothing(store: ImageStore) -> None:
    image = import_image(store, "busybox")
    (layer_dir,) = store.layer_dirs(image)
    blob = store.blobs.path(image.layers[0].digest)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    shutil.rmtree(layer_dir)
    with pytest.raises(EngineFailure, match=f"layer {image.layers[0].digest} is corrupt: "):
        store.layer_dirs(image)
    assert on_disk(store)["layers"] == []


# ---- remove -----------------------------------------------------------------------------------


def test_removing_one_of_several_tags_only_untags(store: ImageStore) -> None:
    image = import_image(store, "busybox")
    store.tag("busybox", "busybox:2")
    result = store.remove("busybox:2", force=False, users=no_users)
    assert (result.untagged, result.deleted) == (["busybox:2"], [])
    assert store.resolve("busybox").repo_tags == ["busybox:latest"]
    assert store.resolve(image.id).id == image.id


def test_removing_the_last_tag_deletes_everything(store: ImageStore) -> None:
    image = import_image(store, "busybox")
    result = store.remove("busybox", force=False, users=no_users)
    assert (result.untagged, result.deleted) == (["busybox:latest"], [image.id])
    assert on_disk(store) == EMPTY | {"root": ["blobs", "images", "layers", "repositories.json"]}
    with pytest.raises(NotFound):
        store.resolve(image.id)


def test_an_image_a_container_uses_is_not_removed(store: ImageStore) -> None:
    image = import_image(store, "busybox")
    container = "c0ffee" * 10

    def users(image_id: str) -> list[str]:
        return [container] if image_id == image.id else []

    with pytest.raises(
        Conflict,
        match=(
            r'^conflict: unable to remove repository reference "busybox:latest" \(must force\) '
            f"- container {container[:12]} is using its referenced image "
            f"{digest_hex(image.id)[:12]}$"
        ),
    ):
        store.remove("busybox", force=False, users=users)
    with pytest.raises(Conflict, match="image is being used by container"):
        store.remove(image.id, force=False, users=users)

    result = store.remove("busybox", force=True, users=users)
    assert (result.untagged, result.deleted) == (["busybox:latest"], [])
    assert store.resolve(image.id).repo_tags == []
    assert store.layer_dirs(store.resolve(image.id))[0].is_dir()


def test_removing_by_id_with_tags_in_several_repositories(store: ImageStore) -> None:
    image = import_image(store, "busybox")
    store.tag("busybox", "other:1")
    with pytest.raises(
        Conflict, match=r"unable to delete .* - image is referenced in multiple repositories"
    ):
        store.remove(image.id, force=False, users=no_users)
    result = store.remove(digest_hex(image.id)[:12], force=True, users=no_users)
    assert (result.untagged, result.deleted) == (["busybox:latest", "other:1"], [image.id])


def test_removing_by_id_with_tags_in_one_repository(store: ImageStore) -> None:
    image = import_image(store, "busybox")
    store.tag("busybox", "busybox:2")
    result = store.remove(image.id, force=False, users=no_users)
    assert (result.untagged, result.deleted) == (["busybox:2", "busybox:latest"], [image.id])


def test_removing_by_repo_digest_untags_that_repository(store: ImageStore) -> None:
    image = import_image(store, "busybox")
    store.tag("busybox", "busybox:2")
    store.tag("busybox", "other:1")
    result = store.remove(f"busybox@{image.manifest_digest}", force=False, users=no_users)
    assert result.untagged == ["busybox:2", "busybox:latest", f"busybox@{image.manifest_digest}"]
    assert result.deleted == []
    result = store.remove(f"other@{image.manifest_digest}", force=False, users=no_users)
    assert result.deleted == [image.id]
    assert store.list() == []


def test_shared_blobs_and_layers_stay_while_referenced(store: ImageStore) -> None:
    first = store.import_rootfs(io.BytesIO(rootfs()), "a")
    second = store.import_rootfs(io.BytesIO(rootfs()), "b", message="another config")
    assert first.id != second.id and first.layers == second.layers
    store.remove("a", force=False, users=no_users)
    assert store.blobs.exists(first.layers[0].digest)
    assert store.layer_dirs(second)[0].is_dir()
    assert not store.blobs.exists(first.id)
    store.remove("b", force=False, users=no_users)
    assert on_disk(store)["blobs"] == [] and on_disk(store)["layers"] == []


def test_remove_unknown(store: ImageStore) -> None:
    with pytest.raises(NotFound, match="No such image: ghost"):
        store.remove("ghost", force=False, users=no_users)


# ---- prune ------------------------------------------------------------------------------------


def test_prune_removes_dangling_images_only(store: ImageStore) -> None:
    tagged = import_image(store, "kept")
    dangling = import_image(store, None)
    deleted, freed = store.prune(all=False, users=no_users)
    assert deleted == [dangling.id]
    assert freed > 0
    assert [image.id for image in store.list()] == [tagged.id]


def test_prune_all_spares_images_in_use(store: ImageStore) -> None:
    used = import_image(store, "used")
    unused = import_image(store, "unused")
    deleted, _ = store.prune(all=True, users=lambda i: ["c1"] if i == used.id else [])
    assert deleted == [unused.id]
    assert [image.repo_tags for image in store.list()] == [["used:latest"]]


def test_prune_collects_garbage_a_crash_left(store: ImageStore) -> None:
    image = import_image(store, "kept")
    before = on_disk(store)
    orphan = store.blobs.put_bytes(b"orphan")
    (store.root / "layers" / ("e" * 64)).mkdir()
    (store.root / "layers" / ("e" * 64) / "f").write_bytes(b"12345")
    deleted, freed = store.prune(all=False, users=no_users)
    assert deleted == []
    assert freed == len(b"orphan") + 5
    assert on_disk(store) == before
    assert not store.blobs.exists(orphan.digest)
    assert store.resolve("kept").id == image.id


def test_a_lease_protects_unreferenced_blobs_from_prune(store: ImageStore) -> None:
    with store.lease() as lease:
        blob, _ = lease.put_layer(io.BytesIO(rootfs()))
        store.prune(all=True, users=no_users)
        assert store.blobs.exists(blob.digest)
    assert not store.blobs.exists(blob.digest)


def test_directories_in_a_rootfs_keep_their_modes(store: ImageStore) -> None:
    image = store.import_rootfs(io.BytesIO(rootfs(directory("tmp", mode=0o1777))), "t")
    (layer_dir,) = store.layer_dirs(image)
    assert stat.S_IMODE((layer_dir / "tmp").stat().st_mode) == 0o1777


def test_imports_racing_with_prune_keep_every_image_whole(store: ImageStore) -> None:
    names = [f"app{i}" for i in range(6)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        imports = [pool.submit(import_image, store, name) for name in names]
        prunes = [pool.submit(store.prune, all=False, users=no_users) for _ in range(20)]
        images = [future.result() for future in imports]
        for future in prunes:
            assert future.result()[0] == []
    for image in images:
        assert store.resolve(image.id).repo_tags == image.repo_tags
        assert all(store.blobs.exists(d) for d in (image.id, image.manifest_digest))
        (layer_dir,) = store.layer_dirs(image)
        assert (layer_dir / "etc/hostname").is_file()
    assert len(on_disk(store)["layers"]) == len(names)

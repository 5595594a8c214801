"""Local volumes: docker's layout, names, errors, in-use checks and prune."""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

import pytest

from agent import volumes
from agent.volumes import Volume, VolumeStore
from api.errors import Conflict, InvalidArgument, NotFound

pytestmark = pytest.mark.unit

NOW = 1_795_866_706


def nobody(name: str) -> list[str]:
    return []


@pytest.fixture
def store(tmp_path: Path) -> VolumeStore:
    return VolumeStore(tmp_path / "volumes", clock=lambda: NOW + 0.9)


def test_create_lays_out_the_volume_as_docker(store: VolumeStore) -> None:
    vol = store.create("pgdata", labels={"app": "db"})
    assert vol == Volume(
        name="pgdata",
        mountpoint=store.root / "pgdata" / "_data",
        created=NOW,
        labels={"app": "db"},
    )
    assert vol.mountpoint.is_dir()
    meta = json.loads((store.root / "pgdata" / "meta.json").read_text())
    assert meta == {"created": NOW, "labels": {"app": "db"}, "anonymous": False}
    assert store.mountpoint("pgdata") == vol.mountpoint


def test_to_proto(store: VolumeStore) -> None:
    msg = store.create("web", labels={"a": "b"}).to_proto()
    assert (msg.name, msg.driver, msg.created, dict(msg.labels)) == (
        "web",
        "local",
        NOW,
        {"a": "b"},
    )
    assert msg.mountpoint == str(store.root / "web" / "_data")


def test_create_without_name_gives_a_random_64_hex_name(store: VolumeStore) -> None:
    first = store.create(None, anonymous=True)
    second = store.create()
    assert re.fullmatch("[0-9a-f]{64}", first.name)
    assert first.name != second.name
    assert (first.anonymous, second.anonymous) == (True, False)


def test_create_of_an_existing_name_returns_it(store: VolumeStore) -> None:
    first = store.create("data", labels={"v": "1"})
    again = VolumeStore(store.root, clock=lambda: NOW + 100).create("data", labels={"v": "2"})
    assert again == first


@pytest.mark.parametrize(
    "name", ["a", "/etc", "../x", "..", "a/b", ".hidden", "-x", "_x", "", "a b", "é1", "a\n"]
)
def test_invalid_names_are_refused(store: VolumeStore, name: str) -> None:
    with pytest.raises(InvalidArgument) as exc_info:
        store.create(name)
    assert "includes invalid characters for a local volume name" in exc_info.value.message
    assert os.listdir(store.root) == []


def test_invalid_name_message_is_dockers(store: VolumeStore) -> None:
    with pytest.raises(InvalidArgument) as exc_info:
        store.create("a/b")
    assert exc_info.value.message == (
        'create a/b: "a/b" includes invalid characters for a local volume name, only '
        '"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host directory, '
        "use absolute path"
    )


@pytest.mark.parametrize("name", ["ab", "a.b-c_d", "A1", "a..", "9" * 64])
def test_valid_names(store: VolumeStore, name: str) -> None:
    assert store.create(name).name == name


def test_get(store: VolumeStore) -> None:
    vol = store.create("data")
    assert store.get("data") == vol
    with pytest.raises(NotFound, match=r"^get nope: no such volume$"):
        store.get("nope")
    with pytest.raises(NotFound, match=r"^get \.\./volumes: no such volume$"):
        store.get("../volumes")  # never looked up on disk
    with pytest.raises(NotFound):
        store.mountpoint("nope")


def test_list_is_sorted_and_skips_what_is_not_a_volume(store: VolumeStore) -> None:
    store.create("zeta")
    store.create("alpha")
    (store.root / ".tmp-half-made").mkdir()
    (store.root / "stray-file").write_text("x")
    (store.root / "by-hand").mkdir()  # no metadata: still a volume
    assert [v.name for v in store.list()] == ["alpha", "by-hand", "zeta"]
    assert store.get("by-hand").labels == {}


def test_remove(store: VolumeStore) -> None:
    vol = store.create("data")
    (vol.mountpoint / "file").write_text("x")
    store.remove("data", users=nobody)
    assert os.listdir(store.root) == []
    with pytest.raises(NotFound, match=r"^get data: no such volume$"):
        store.remove("data", users=nobody)
    store.remove("data", force=True, users=nobody)  # force forgives a missing volume
    store.remove("../x", force=True, users=nobody)


def test_remove_refuses_a_volume_in_use_even_with_force(store: VolumeStore) -> None:
    store.create("data")

    def users(name: str) -> list[str]:
        return ["c1" * 32, "c2" * 32] if name == "data" else []

    for force in (False, True):
        with pytest.raises(Conflict) as exc_info:
            store.remove("data", force=force, users=users)
        assert exc_info.value.message == (
            f"remove data: volume is in use - [{'c1' * 32}, {'c2' * 32}]"
        )
    assert store.get("data").name == "data"


def test_prune_removes_unused_anonymous_volumes_only(store: VolumeStore) -> None:
    unused = store.create(None, anonymous=True)
    used = store.create(None, anonymous=True)
    store.create("named")
    (unused.mountpoint / "a").write_bytes(b"x" * 1000)
    os.link(unused.mountpoint / "a", unused.mountpoint / "hardlink")  # counted once
    (unused.mountpoint / "dir").mkdir()
    (unused.mountpoint / "dir" / "b").write_bytes(b"y" * 24)
    (unused.mountpoint / "link").symlink_to("/etc/passwd")

    names, reclaimed = store.prune(lambda name: ["c1"] if name == used.name else [])
    assert names == [unused.name]
    assert reclaimed == 1000 + 24 + len("/etc/passwd")
    assert sorted(v.name for v in store.list()) == sorted([used.name, "named"])


def test_prune_all_volumes(store: VolumeStore) -> None:
    store.create("named")
    anon = store.create(None, anonymous=True)
    assert store.prune(nobody, all_volumes=True) == (sorted(["named", anon.name]), 0)
    assert store.list() == []


def test_a_failed_create_leaves_nothing(
    store: VolumeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(path: Path, meta: dict[str, object]) -> None:
        path.write_text("{")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(volumes, "_write_meta", broken)
    with pytest.raises(OSError, match="No space left"):
        store.create("data")
    assert os.listdir(store.root) == []


def test_crash_leftovers_are_cleared_on_open(tmp_path: Path) -> None:
    root = tmp_path / "volumes"
    (root / ".tmp-0123" / "_data").mkdir(parents=True)
    (root / ".trash-4567" / "_data").mkdir(parents=True)
    (root / "kept" / "_data").mkdir(parents=True)
    VolumeStore(root)
    assert os.listdir(root) == ["kept"]


def test_concurrent_creates_of_one_name_agree(tmp_path: Path) -> None:
    store = VolumeStore(tmp_path / "volumes")
    results: list[Volume] = []
    barrier = threading.Barrier(16)

    def create(i: int) -> None:
        barrier.wait()
        results.append(store.create("shared", labels={"by": str(i)}))
        results.append(store.create(f"own{i}"))

    threads = [threading.Thread(target=create, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shared = [v for v in results if v.name == "shared"]
    assert len(shared) == 16 and all(v == shared[0] for v in shared)
    assert len(store.list()) == 17
    assert not [n for n in os.listdir(store.root) if n.startswith(".")]

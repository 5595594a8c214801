"""Encryption at rest: keys.json wrapping, autolock and the encrypted state machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from api.errors import Conflict, InvalidArgument
from manager.keys import EncryptedMachine, KeyStore, Locked
from manager.store import MemoryStore

pytestmark = pytest.mark.unit


def test_unlocked_keys_reload_without_the_operator(tmp_path: Path) -> None:
    password = "raft-password-that-must-not-be-on-disk"
    keys = KeyStore.create(tmp_path, password=password, data_key=KeyStore.new_data_key())
    again = KeyStore.load(tmp_path)
    assert (again.password, again.data_key) == (password, keys.data_key)
    assert (tmp_path / "keys.json").stat().st_mode & 0o777 == 0o600
    on_disk = (tmp_path / "keys.json").read_bytes()
    assert password.encode() not in on_disk and keys.data_key not in on_disk


def test_autolock_needs_the_unlock_key(tmp_path: Path) -> None:
    keys = KeyStore.create(tmp_path, password="pw", data_key=KeyStore.new_data_key())
    keys.wrap(unlock_key="SWMKEY-1-ABC")
    assert json.loads((tmp_path / "keys.json").read_text())["kek"] is None
    assert KeyStore.is_locked(tmp_path)
    with pytest.raises(Locked, match="pyswarm swarm unlock"):
        KeyStore.load(tmp_path)
    with pytest.raises(InvalidArgument, match="invalid key"):
        KeyStore.unlock(tmp_path, "SWMKEY-1-WRONG")
    unlocked = KeyStore.unlock(tmp_path, "SWMKEY-1-ABC\n")
    assert unlocked.data_key == keys.data_key
    unlocked.wrap(unlock_key="")  # autolock off again
    with pytest.raises(Conflict, match="not locked"):
        KeyStore.unlock(tmp_path, "SWMKEY-1-ABC")
    assert KeyStore.load(tmp_path).password == "pw"


def test_the_machine_sees_clear_text_and_raft_only_ciphertext() -> None:
    from api import objects_pb2 as objects

    keys = KeyStore(Path("/nonexistent"), "pw", KeyStore.new_data_key())
    store = MemoryStore()
    machine = EncryptedMachine(store, keys.cipher)
    batch = objects.StoreBatch(
        actions=[
            objects.StoreAction(
                kind=objects.StoreAction.CREATE,
                node=objects.Node(meta=objects.Meta(id="n1"), spec=objects.NodeSpec(name="x")),
            )
        ]
    ).SerializeToString()
    entry = keys.cipher.seal(batch)
    assert b"n1" not in entry
    result = objects.ApplyResult.FromString(machine.apply(entry))
    assert not result.error_kind and store.version == 1
    snapshot = machine.snapshot()
    assert b"n1" not in snapshot
    replica = MemoryStore()
    EncryptedMachine(replica, keys.cipher).restore(snapshot)
    assert replica.snapshot() == store.snapshot()

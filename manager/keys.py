"""Encryption at rest of a manager's Raft data, and autolock.

Two layers, as in swarmkit:
- the data key (DEK) encrypts every Raft entry and snapshot (AES-256-GCM, a random
  96-bit nonce per message). Raft replicates entries as they are written, so the DEK
  is the same on every manager; a new manager receives it, with the Raft password,
  over mTLS when it joins Raft. Nothing of the store (the CA key, secrets, node and
  cluster objects) reaches the disk in clear.
- the key-encryption key (KEK) wraps the DEK and the Raft password in `keys.json`.
  Without autolock the KEK is kept beside them, so the daemon restarts unattended.
  With autolock it is derived from the unlock key the operator holds and is never
  written: a restarted manager stays locked until `pyswarm swarm unlock`.

    keys = KeyStore.create(state_dir, password="...", data_key=KeyStore.new_data_key())
    keys = KeyStore.load(state_dir)          # raises Locked under autolock
    keys = KeyStore.unlock(state_dir, key)   # raises InvalidArgument for a wrong key
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from api.credentials import write_atomic
from api.errors import Conflict, InvalidArgument
from manager.raft import StateMachine

KEYS_FILE = "keys.json"
LOCKED = (
    "Swarm is encrypted and needs to be unlocked before it can be used. "
    'Please use "pyswarm swarm unlock" to unlock it.'
)


class Locked(Conflict):
    def __init__(self) -> None:
        super().__init__(LOCKED)


def kek_from_unlock_key(unlock_key: str) -> bytes:
    """A Fernet key derived from the operator's unlock key (SWMKEY-1-...)."""
    digest = hashlib.sha256(b"pyswarm-kek\0" + unlock_key.strip().encode()).digest()
    return base64.urlsafe_b64encode(digest)


@dataclass(frozen=True)
class KeyStore:
    state_dir: Path
    password: str
    data_key: bytes

    @staticmethod
    def new_data_key() -> bytes:
        return AESGCM.generate_key(bit_length=256)

    @property
    def cipher(self) -> DataCipher:
        return DataCipher(self.data_key)

    @classmethod
    def create(cls, state_dir: Path, *, password: str, data_key: bytes) -> KeyStore:
        keys = cls(state_dir, password, data_key)
        keys.wrap(unlock_key="")
        return keys

    def wrap(self, *, unlock_key: str) -> None:
        """(Re)write keys.json: KEK kept in clear, or derived from `unlock_key`."""
        if unlock_key:
            kek, stored = kek_from_unlock_key(unlock_key), None
        else:
            kek = Fernet.generate_key()
            stored = kek.decode()
        wrapper = Fernet(kek)
        doc = {
            "kek": stored,
            "data_key": wrapper.encrypt(self.data_key).decode(),
            "password": wrapper.encrypt(self.password.encode()).decode(),
        }
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self.state_dir / KEYS_FILE, json.dumps(doc).encode(), mode=0o600)

    @staticmethod
    def is_locked(state_dir: Path) -> bool:
        doc = json.loads((state_dir / KEYS_FILE).read_text())
        return doc.get("kek") is None

    @classmethod
    def load(cls, state_dir: Path) -> KeyStore:
        doc = json.loads((state_dir / KEYS_FILE).read_text())
        if doc.get("kek") is None:
            raise Locked()
        return cls._open(state_dir, doc, doc["kek"].encode())

    @classmethod
    def unlock(cls, state_dir: Path, unlock_key: str) -> KeyStore:
        doc = json.loads((state_dir / KEYS_FILE).read_text())
        if doc.get("kek") is not None:
            raise Conflict("Error: swarm is not locked")
        try:
            return cls._open(state_dir, doc, kek_from_unlock_key(unlock_key))
        except InvalidToken:
            raise InvalidArgument("invalid key: the swarm could not be unlocked") from None

    @classmethod
    def _open(cls, state_dir: Path, doc: dict[str, str], kek: bytes) -> KeyStore:
        wrapper = Fernet(kek)
        data_key = wrapper.decrypt(doc["data_key"].encode())
        password = wrapper.decrypt(doc["password"].encode()).decode()
        return cls(state_dir, password, data_key)

    @staticmethod
    def exists(state_dir: Path) -> bool:
        return os.path.exists(state_dir / KEYS_FILE)


class DataCipher:
    """Seal and open Raft data with the DEK: nonce (12 bytes) + AES-GCM ciphertext."""

    NONCE = 12

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, data: bytes) -> bytes:
        nonce = os.urandom(self.NONCE)
        return nonce + self._aead.encrypt(nonce, data, None)

    def open(self, sealed: bytes) -> bytes:
        return self._aead.decrypt(sealed[: self.NONCE], sealed[self.NONCE :], None)


class EncryptedMachine:
    """The store as Raft's state machine, with entries and snapshots encrypted."""

    def __init__(self, machine: StateMachine, cipher: DataCipher) -> None:
        self.machine = machine
        self.cipher = cipher

    def apply(self, data: bytes) -> bytes:
        return self.machine.apply(self.cipher.open(data))

    def snapshot(self) -> bytes:
        return self.cipher.seal(self.machine.snapshot())

    def restore(self, data: bytes) -> None:
        self.machine.restore(self.cipher.open(data))

"""A node's TLS identity on disk: its private key, its certificate and the cluster CA.

Both sides use it: the agent presents the certificate to managers, and a manager
presents the same certificate (issued with the manager role) to its peers and agents.
Files live in one directory, written atomically (temp file + rename) with mode 0600
for the key; `generation` grows on every save so holders of derived grpc credentials
know when to rebuild them after a renewal.

    creds = NodeCredentials(data_root / "swarm" / "certificates")
    creds.save(key_pem=..., cert_pem=..., ca_pem=...)
    creds.cert_pem, creds.node_id, creds.role
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from api.pki import cert_info

KEY = "node.key"
CERT = "node.crt"
CA = "ca.crt"


def write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class NodeCredentials:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self.generation = 0
        self._key = self._cert = self._ca = b""
        if (directory / CERT).exists():
            self._key = (directory / KEY).read_bytes()
            self._cert = (directory / CERT).read_bytes()
            self._ca = (directory / CA).read_bytes()
            self.generation = 1

    def exists(self) -> bool:
        return self.generation > 0

    def save(self, *, key_pem: bytes, cert_pem: bytes, ca_pem: bytes) -> None:
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomic(self.directory / CA, ca_pem, mode=0o644)
            write_atomic(self.directory / KEY, key_pem, mode=0o600)
            write_atomic(self.directory / CERT, cert_pem, mode=0o644)
            self._key, self._cert, self._ca = key_pem, cert_pem, ca_pem
            self.generation += 1

    def triple(self) -> tuple[bytes, bytes, bytes]:
        """(key, cert, ca) read together, never a key from one renewal with another's cert."""
        with self._lock:
            return self._key, self._cert, self._ca

    @property
    def cert_pem(self) -> bytes:
        return self.triple()[1]

    @property
    def ca_pem(self) -> bytes:
        return self.triple()[2]

    @property
    def node_id(self) -> str:
        return cert_info(self.cert_pem).node_id

    @property
    def role(self) -> str:
        return cert_info(self.cert_pem).role

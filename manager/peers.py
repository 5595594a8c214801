"""mTLS channels from this node to managers, rebuilt when the node's certificate renews.

Managers use them to forward writes and membership calls to the leader; the agent
side has its own (agent/swarm). One channel per address, kept open: gRPC multiplexes
calls over it, so a forwarded write costs a round trip, not a handshake.
"""

from __future__ import annotations

import threading
from typing import Protocol

import grpc

from api import pki


class CredentialSource(Protocol):
    generation: int

    def triple(self) -> tuple[bytes, bytes, bytes]: ...


class PeerChannels:
    def __init__(self, credentials: CredentialSource) -> None:
        self.credentials = credentials
        self._lock = threading.Lock()
        self._channels: dict[str, tuple[int, grpc.Channel]] = {}

    def get(self, addr: str) -> grpc.Channel:
        with self._lock:
            generation = self.credentials.generation
            cached = self._channels.get(addr)
            if cached is not None and cached[0] == generation:
                return cached[1]
            if cached is not None:
                cached[1].close()
            key, cert, ca = self.credentials.triple()
            channel = pki.cluster_channel(addr, ca, cert_pem=cert, key_pem=key)
            self._channels[addr] = (generation, channel)
            return channel

    def close(self) -> None:
        with self._lock:
            for _, channel in self._channels.values():
                channel.close()
            self._channels.clear()

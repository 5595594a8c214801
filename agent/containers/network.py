"""What the engine needs from networking, as a protocol the daemon wiring fills in.

The engine never imports `overlay`; `cli.daemon` passes an implementation (the
`pyswarm0` bridge driver in `overlay.bridge`). Ports are the API's own
`PortBinding` messages, so both sides share one type through `api`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from api import engine_pb2

from .spec import NEW_NETNS


class Attachment(Protocol):
    """A container's network as set up by the driver."""

    @property
    def netns_path(self) -> str | None:
        """Path of the network namespace to join; None for `--network host`."""

    @property
    def ip_address(self) -> str:
        """The container's address ("" for none/host)."""

    @property
    def gateway(self) -> str: ...

    @property
    def ports(self) -> Sequence[engine_pb2.PortBinding]:
        """Published ports with host ports resolved (never 0)."""


class NetworkDriver(Protocol):
    def attach(
        self,
        container_id: str,
        *,
        mode: str,
        ports: Sequence[engine_pb2.PortBinding],
        overlays: Sequence[engine_pb2.OverlayAttachment] = (),
    ) -> Attachment:
        """Create the container's network (mode: none | host | bridge), and join it
        to the swarm's overlay networks in `overlays` (eth1, eth2, ... in order).

        Raises api.errors.InvalidArgument for a bad mode or port, Conflict for a host
        port already published; leaves nothing behind when it raises."""

    def detach(self, container_id: str) -> None:
        """Remove everything attach made for this container; idempotent."""

    def restore(self, live: Sequence[str]) -> None:
        """At daemon start: keep the state of these containers, remove the rest."""


@dataclass(frozen=True)
class Isolated:
    """The attachment of `--network none`: a new namespace with only loopback."""

    netns_path: str | None = NEW_NETNS
    ip_address: str = ""
    gateway: str = ""
    ports: tuple[engine_pb2.PortBinding, ...] = ()

"""Typed helpers for overlay networks (names unique, ignoring case, like services)."""

from __future__ import annotations

from api import objects_pb2 as objects
from manager.store.tables import ALL, NETWORKS, Selector
from manager.store.tx import ReadTx, Tx, resolve


def find_networks(tx: ReadTx, *, by: Selector = ALL) -> list[objects.Network]:
    return tx.find(NETWORKS, by=by)


def get_network(tx: ReadTx, network_id: str) -> objects.Network | None:
    return tx.get(NETWORKS, network_id)


def resolve_network(tx: ReadTx, ref: str) -> objects.Network:
    """The network `ref` names: id, else name, else a unique id prefix."""
    network: objects.Network = resolve(tx, NETWORKS, ref)
    return network


def create_network(tx: Tx, network: objects.Network) -> None:
    tx.create(network)


def update_network(tx: Tx, network: objects.Network) -> None:
    tx.update(network)


def delete_network(tx: Tx, network_id: str) -> None:
    tx.delete(NETWORKS, network_id)

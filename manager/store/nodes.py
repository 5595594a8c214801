"""Typed helpers for nodes, swarmkit-style: `get_node(tx, id)`, `find_nodes(tx, by=...)`.

A node's name, for `ByName` and `resolve_node`, is its hostname (ignoring case).
"""

from __future__ import annotations

from api import objects_pb2 as objects
from manager.store.tables import ALL, NODES, Selector
from manager.store.tx import ReadTx, Tx, resolve


def get_node(tx: ReadTx, node_id: str) -> objects.Node | None:
    return tx.get(NODES, node_id)


def find_nodes(tx: ReadTx, *, by: Selector = ALL) -> list[objects.Node]:
    """Nodes selected by All, ByName(hostname), ByIdPrefix(prefix) or ByRole(role)."""
    return tx.find(NODES, by=by)


def create_node(tx: Tx, node: objects.Node) -> None:
    tx.create(node)


def update_node(tx: Tx, node: objects.Node) -> None:
    tx.update(node)


def delete_node(tx: Tx, node_id: str) -> None:
    tx.delete(NODES, node_id)


def resolve_node(tx: ReadTx, ref: str) -> objects.Node:
    """The node `ref` names: exact id, else hostname, else a unique id prefix."""
    return resolve(tx, NODES, ref)

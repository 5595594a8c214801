"""Typed helpers for nodes, swarmkit-style: `get_node(tx, id)`, `find_nodes(tx, by=...)`.

A node's name, for `ByName` and `resolve_node`, is its hostname (ignoring case).
"""

from __future__ import annotations

from api import objects_pb2 as objects
from api.errors import InvalidArgument, NotFound
from manager.store.tables import ALL, NODES, ByIdPrefix, ByName, Selector
from manager.store.tx import ReadTx, Tx


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
    """The node `ref` names, as docker resolves it: exact id, else hostname, else a
    unique id prefix. NotFound if none matches, InvalidArgument if several do."""
    node = get_node(tx, ref) if ref else None
    if node is not None:
        return node
    # Only a non-empty ref may match: an empty prefix would match every node.
    matches = find_nodes(tx, by=ByName(ref)) if ref else []
    if ref and not matches:
        matches = find_nodes(tx, by=ByIdPrefix(ref))
    if not matches:
        raise NotFound(f"node {ref} not found")
    if len(matches) > 1:
        raise InvalidArgument(f"node {ref} is ambiguous ({len(matches)} matches found)")
    return matches[0]

"""Typed helpers for the cluster object (there is one per swarm, created by `swarm init`)."""

from __future__ import annotations

from api import objects_pb2 as objects
from manager.store.tables import ALL, CLUSTERS, Selector
from manager.store.tx import ReadTx, Tx


def get_cluster(tx: ReadTx, cluster_id: str) -> objects.Cluster | None:
    return tx.get(CLUSTERS, cluster_id)


def find_clusters(tx: ReadTx, *, by: Selector = ALL) -> list[objects.Cluster]:
    """Clusters selected by All, ByName(name) or ByIdPrefix(prefix)."""
    return tx.find(CLUSTERS, by=by)


def create_cluster(tx: Tx, cluster: objects.Cluster) -> None:
    tx.create(cluster)


def update_cluster(tx: Tx, cluster: objects.Cluster) -> None:
    tx.update(cluster)


def delete_cluster(tx: Tx, cluster_id: str) -> None:
    tx.delete(CLUSTERS, cluster_id)

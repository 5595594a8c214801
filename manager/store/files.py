"""Typed helpers for secrets and configs: named blobs that tasks see as files.

Names are unique per kind (ignoring case). Their data is replicated with the rest of
the store, which Raft keeps encrypted at rest (manager.keys); the control API never
returns a secret's data.
"""

from __future__ import annotations

from typing import Any

from api import objects_pb2 as objects
from manager.store.tables import ALL, CONFIGS, SECRETS, Selector, Table
from manager.store.tx import ReadTx, Tx, resolve


def find_secrets(tx: ReadTx, *, by: Selector = ALL) -> list[objects.Secret]:
    return tx.find(SECRETS, by=by)


def find_configs(tx: ReadTx, *, by: Selector = ALL) -> list[objects.Config]:
    return tx.find(CONFIGS, by=by)


def get_secret(tx: ReadTx, secret_id: str) -> objects.Secret | None:
    return tx.get(SECRETS, secret_id)


def get_config(tx: ReadTx, config_id: str) -> objects.Config | None:
    return tx.get(CONFIGS, config_id)


def create_file(tx: Tx, obj: objects.Secret | objects.Config) -> None:
    """Create a secret or config; AlreadyExists if its name is taken (unique names are
    the store's rule: tables.Table.unique_name)."""
    tx.create(obj)


def delete_file(tx: Tx, table: Table[Any], obj_id: str) -> None:
    tx.delete(table, obj_id)


def resolve_file(tx: ReadTx, table: Table[Any], ref: str) -> Any:
    """The secret or config `ref` names: id, else name, else a unique id prefix."""
    return resolve(tx, table, ref)

"""Typed helpers for services and their tasks.

A service's name is unique (ignoring case), as docker's is: the store refuses a taken
name (tables.Table.unique_name), in the transaction and again when the batch is applied. Tasks are found by service, node, desired state or
observed state through the store's maintained indexes, never by a scan.
"""

from __future__ import annotations

from api import objects_pb2 as objects
from manager.store.tables import ALL, SERVICES, TASKS, Selector
from manager.store.tx import ReadTx, Tx, resolve


def get_service(tx: ReadTx, service_id: str) -> objects.Service | None:
    return tx.get(SERVICES, service_id)


def find_services(tx: ReadTx, *, by: Selector = ALL) -> list[objects.Service]:
    """Services selected by All, ByName(name), ByIdPrefix(prefix) or ByReferencedFile."""
    return tx.find(SERVICES, by=by)


def create_service(tx: Tx, service: objects.Service) -> None:
    """AlreadyExists if the name is taken (the SERVICES table's names are unique)."""
    tx.create(service)


def update_service(tx: Tx, service: objects.Service) -> None:
    tx.update(service)


def delete_service(tx: Tx, service_id: str) -> None:
    tx.delete(SERVICES, service_id)


def resolve_service(tx: ReadTx, ref: str) -> objects.Service:
    """The service `ref` names: exact id, else name, else a unique id prefix."""
    return resolve(tx, SERVICES, ref)


def get_task(tx: ReadTx, task_id: str) -> objects.Task | None:
    return tx.get(TASKS, task_id)


def find_tasks(tx: ReadTx, *, by: Selector = ALL, copy: bool = True) -> list[objects.Task]:
    """Tasks selected by All, ByIdPrefix, ByService, ByNode, ByDesiredState or
    ByTaskState; `copy=False` only for readers that never change them (ReadTx.find)."""
    return tx.find(TASKS, by=by, copy=copy)


def create_task(tx: Tx, task: objects.Task) -> None:
    tx.create(task)


def update_task(tx: Tx, task: objects.Task) -> None:
    tx.update(task)


def delete_task(tx: Tx, task_id: str) -> None:
    tx.delete(TASKS, task_id)


def resolve_task(tx: ReadTx, ref: str) -> objects.Task:
    """The task with id `ref`, else the one task whose id starts with it."""
    return resolve(tx, TASKS, ref)

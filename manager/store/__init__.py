"""The in-memory store every manager keeps, fed by Raft: the cluster's objects.

Design (after swarmkit's manager/state/store):

- Objects are protobuf messages, meta (id, version, timestamps) + spec + status, kept
  in one table per kind (`tables.TABLES`: "node", "cluster"; a new kind is one entry).
- Reads run a function over one consistent state: `store.view(fn)`; every object a
  transaction returns is a copy, so callers can never change the store's objects.
- Writes run a function over a `Tx`, which sees its own pending writes; when it
  returns, its writes become ONE StoreBatch handed to `propose` (Raft), which calls
  `store.apply(data)` on every manager in log order. `batch(fn)` is for bulk changes
  and proposes every 200 writes, so it is not atomic as a whole.
- `apply` is deterministic (no clock, no randomness: the Tx stamps times on the
  proposer) and all-or-nothing. It checks the whole batch first: CREATE of an existing
  id is "exists", UPDATE/REMOVE of a missing one "not_found", an UPDATE whose
  meta.version is not the stored one "conflict" ("update out of sequence": no lost
  updates). The proposer raises AlreadyExists, NotFound or SequenceConflict.
- The store's version goes up by one per applied batch, and every object the batch
  wrote carries that version in meta.version.
- Watches get one Event per applied action, then a Commit(version) per batch, or a
  Reset on `restore`; `view_and_watch` subscribes atomically with a read. Queues are
  bounded: a watcher that falls behind is closed as `overflowed` and re-lists.
- `snapshot()`/`restore()` carry everything as a StoreSnapshot, ordered by id, so equal
  states give equal bytes.

Usage::

    store = MemoryStore()            # or MemoryStore(propose=raft.propose)

    def drain(tx: Tx) -> None:
        node = resolve_node(tx, "worker-1")
        node.spec.availability = objects.DRAIN
        update_node(tx, node)        # carries the version it was read at

    store.update(drain)
    managers = store.view(lambda tx: find_nodes(tx, by=ByRole(objects.MANAGER)))
"""

from manager.store.clusters import (
    create_cluster,
    delete_cluster,
    find_clusters,
    get_cluster,
    update_cluster,
)
from manager.store.files import (
    create_file,
    delete_file,
    find_configs,
    find_secrets,
    get_config,
    get_secret,
    resolve_file,
)
from manager.store.memory import MAX_ACTIONS_PER_PROPOSAL, Batch, MemoryStore
from manager.store.networks import (
    create_network,
    delete_network,
    find_networks,
    get_network,
    resolve_network,
    update_network,
)
from manager.store.nodes import (
    create_node,
    delete_node,
    find_nodes,
    get_node,
    resolve_node,
    update_node,
)
from manager.store.services import (
    create_service,
    create_task,
    delete_service,
    delete_task,
    find_services,
    find_tasks,
    get_service,
    get_task,
    resolve_service,
    resolve_task,
    update_service,
    update_task,
)
from manager.store.tables import (
    ALL,
    CLUSTERS,
    CONFIGS,
    NETWORKS,
    NODES,
    SECRETS,
    SERVICES,
    TABLES,
    TASKS,
    All,
    ByDesiredState,
    ByIdPrefix,
    ByName,
    ByNode,
    ByReferencedFile,
    ByRole,
    ByService,
    ByTaskState,
    Selector,
    StoreObject,
    Table,
)
from manager.store.tx import ReadTx, Tx
from manager.store.watch import Commit, Event, EventAction, Reset, Watch, WatchClosed, WatchItem

__all__ = [
    "ALL",
    "CLUSTERS",
    "CONFIGS",
    "MAX_ACTIONS_PER_PROPOSAL",
    "NETWORKS",
    "NODES",
    "SECRETS",
    "SERVICES",
    "TABLES",
    "TASKS",
    "All",
    "Batch",
    "ByDesiredState",
    "ByIdPrefix",
    "ByName",
    "ByNode",
    "ByReferencedFile",
    "ByRole",
    "ByService",
    "ByTaskState",
    "Commit",
    "Event",
    "EventAction",
    "MemoryStore",
    "ReadTx",
    "Reset",
    "Selector",
    "StoreObject",
    "Table",
    "Tx",
    "Watch",
    "WatchClosed",
    "WatchItem",
    "create_cluster",
    "create_file",
    "create_network",
    "create_node",
    "create_service",
    "create_task",
    "delete_cluster",
    "delete_file",
    "delete_network",
    "delete_node",
    "delete_service",
    "delete_task",
    "find_clusters",
    "find_configs",
    "find_networks",
    "find_nodes",
    "find_secrets",
    "find_services",
    "find_tasks",
    "get_cluster",
    "get_config",
    "get_network",
    "get_node",
    "get_secret",
    "get_service",
    "get_task",
    "resolve_file",
    "resolve_network",
    "resolve_node",
    "resolve_service",
    "resolve_task",
    "update_cluster",
    "update_network",
    "update_node",
    "update_service",
    "update_task",
]

"""MemoryStore: the replicated state machine every manager keeps, and its API.

Writes never touch the rows directly. `update` runs a function against a `Tx`, turns
its writes into one StoreBatch and hands the bytes to `propose` (Raft); Raft calls
`apply` with the same bytes on every manager, in log order, and the proposer gets
apply's ApplyResult back. Without `propose` the store applies its own batches.

Locks, and the order they are taken in:

1. No lock spans a proposal: many `update`s may be in flight at once (Raft batches
   them, which is where the write throughput comes from). Concurrency is optimistic:
   `apply` refuses an UPDATE whose version is stale, so a check made inside a Tx on
   an object it then writes still holds when its batch is applied; a uniqueness rule
   across objects must be enforced by `apply` itself.
2. `_lock` (re-entrant) guards the rows, the version and the watch list. `view`, the
   functions given to `update`, `apply`, `snapshot` and `restore` run under it.

`propose` is always called with `_lock` released: it returns only after `apply` has run
on the Raft thread, which needs `_lock`. For the same reason `update` and `batch` refuse
to start inside a view or update function on the same thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Final, TypeVar

from api import objects_pb2 as objects
from api.errors import InvalidArgument, SequenceConflict
from manager.store.tables import (
    BY_KIND,
    TABLES,
    ErrorKind,
    Refusal,
    StoreObject,
    Table,
    check_name,
    check_write,
    clone,
    error_for,
    target,
)
from manager.store.tx import ReadTx, State, Tx
from manager.store.watch import DEFAULT_MAXSIZE, Commit, Event, EventAction, Reset, Watch

T = TypeVar("T")
TxT = TypeVar("TxT", bound=ReadTx)
Propose = Callable[[bytes], bytes]

MAX_ACTIONS_PER_PROPOSAL: Final = 200
_KINDS: Final = (
    objects.StoreAction.CREATE,
    objects.StoreAction.UPDATE,
    objects.StoreAction.REMOVE,
)
_EVENT_ACTIONS: Final = {
    objects.StoreAction.CREATE: EventAction.CREATE,
    objects.StoreAction.UPDATE: EventAction.UPDATE,
    objects.StoreAction.REMOVE: EventAction.REMOVE,
}
_inside = threading.local()  # .depth: store functions running on this thread


class MemoryStore:
    """The cluster's objects, in memory, changed only by applying StoreBatches.

    Usage::

        store = MemoryStore(propose=raft.propose)
        store.update(lambda tx: create_node(tx, node))
        nodes = store.view(lambda tx: find_nodes(tx, by=ByRole(objects.MANAGER)))
    """

    def __init__(
        self, *, propose: Propose | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self._propose = propose
        self._clock = clock
        self._lock = threading.RLock()
        self._state = State()
        self._watches: list[Watch] = []

    @property
    def version(self) -> int:
        """The version of the last applied batch (or restored snapshot); 0 when empty."""
        with self._lock:
            return self._state.version

    # ---- reads and writes -------------------------------------------------------------

    def view(self, fn: Callable[[ReadTx], T]) -> T:
        """`fn` over one consistent state; the objects it reads are copies."""
        return self._run(ReadTx(self._state), fn)

    def update(self, fn: Callable[[Tx], T]) -> T:
        """Run `fn`, then propose its writes as ONE batch, applied all or nothing.

        Raises what the batch was refused with (AlreadyExists, NotFound,
        SequenceConflict) or whatever `propose` raises; returns `fn`'s result.
        """
        with self._updating("update"):
            tx = Tx(self._state, clock=self._clock)
            result = self._run(tx, fn)
            self._commit(tx.actions())
        return result

    def update_retrying(self, fn: Callable[[Tx], T], *, attempts: int = 5) -> T:
        """`update`, run again (re-reading) when a concurrent write made it stale: for
        system writes that apply a rule to the current state (a node's liveness, a
        role), never for a user's update, whose version must be the one they read."""
        for _ in range(attempts - 1):
            try:
                return self.update(fn)
            except SequenceConflict:
                continue
        return self.update(fn)

    def batch(self, fn: Callable[[Batch], T], *, max_actions: int = MAX_ACTIONS_PER_PROPOSAL) -> T:
        """Run `fn`, which makes many changes through `Batch.update` callbacks.

        Unlike `update`, the whole is NOT atomic: once `max_actions` writes are pending
        they are proposed, so a failure leaves earlier proposals applied. Each callback
        on its own is atomic (it is never split, and its writes are dropped if it
        raises). Writes still pending when `fn` raises are dropped.
        """
        with self._updating("batch"):
            batch = Batch(self, max_actions=max_actions)
            try:
                result = fn(batch)
                batch.flush()
            finally:
                batch.closed = True
        return result

    # ---- the state machine (called by Raft) ---------------------------------------------

    def apply(self, data: bytes) -> bytes:
        """Apply one serialized StoreBatch, all or nothing; a serialized ApplyResult.

        Deterministic: the same batches in the same order give the same state and
        results on every manager. The whole batch is checked before anything changes.
        """
        batch = objects.StoreBatch.FromString(data)
        with self._lock:
            refusal = self._check(batch.actions)
            if refusal is not None:
                return objects.ApplyResult(
                    error_kind=refusal.kind,
                    error_message=refusal.message,
                    version=self._state.version,
                ).SerializeToString()
            if batch.actions:
                self._state.version += 1
                events = [self._write(act, self._state.version) for act in batch.actions]
                self._publish(events, Commit(self._state.version))
            return objects.ApplyResult(version=self._state.version).SerializeToString()

    def snapshot(self) -> bytes:
        """Everything, as a StoreSnapshot; the same state always gives the same bytes."""
        with self._lock:
            snap = objects.StoreSnapshot(version=self._state.version)
            for table in TABLES:
                rows = self._state.rows[table.kind]
                getattr(snap, table.plural).extend(rows[i] for i in sorted(rows))
        return snap.SerializeToString(deterministic=True)

    def restore(self, data: bytes) -> None:
        """Replace everything with a snapshot; watchers get a Reset marker."""
        snap = objects.StoreSnapshot.FromString(data)
        fresh = State()
        for table in TABLES:
            for obj in getattr(snap, table.plural):
                fresh.put(table, clone(obj))
        with self._lock:
            # In place: transactions hold on to the State object itself.
            self._state.rows = fresh.rows
            self._state.indexes = fresh.indexes
            self._state.version = snap.version
            self._publish([], Reset(snap.version))

    # ---- watches -----------------------------------------------------------------------

    def watch(
        self,
        *,
        kinds: Iterable[str] | None = None,
        maxsize: int = DEFAULT_MAXSIZE,
        copies: bool = True,
    ) -> Watch:
        """Subscribe to what is applied from now on (see manager.store.watch);
        `copies=False` for a consumer that never changes the objects it gets."""
        watch = _new_watch(kinds, maxsize, copies)
        with self._lock:
            self._watches.append(watch)
        return watch

    def view_and_watch(
        self,
        fn: Callable[[ReadTx], T],
        *,
        kinds: Iterable[str] | None = None,
        maxsize: int = DEFAULT_MAXSIZE,
        copies: bool = True,
    ) -> tuple[T, Watch]:
        """`view(fn)` and a watch starting exactly after the state `fn` saw."""
        watch = _new_watch(kinds, maxsize, copies)
        with self._lock:
            result = self.view(fn)
            self._watches.append(watch)
        return result, watch

    # ---- internals -----------------------------------------------------------------------

    @contextmanager
    def _updating(self, what: str) -> Iterator[None]:
        # Proposing from inside a store function would hold the store lock while waiting
        # for apply, which needs it: a deadlock, so refuse early and loudly.
        _check_outside(what)
        if getattr(_inside, "updating", False):
            raise RuntimeError(f"store {what} called inside another update or batch")
        _inside.updating = True
        try:
            yield
        finally:
            _inside.updating = False

    def _run(self, tx: TxT, fn: Callable[[TxT], T]) -> T:
        with self._lock, _running():
            tx.activate(True)
            try:
                return fn(tx)
            finally:
                tx.activate(False)

    def _commit(self, actions: list[objects.StoreAction]) -> None:
        """Propose `actions` as one batch; the store lock must not be held."""
        if not actions:
            return
        data = objects.StoreBatch(actions=actions).SerializeToString(deterministic=True)
        reply = self._propose(data) if self._propose is not None else self.apply(data)
        result = objects.ApplyResult.FromString(reply)
        if result.error_kind:
            raise error_for(result.error_kind, result.error_message)

    def _check(self, actions: Iterable[objects.StoreAction]) -> Refusal | None:
        """The first reason to refuse the batch, following its writes in order."""
        versions: dict[tuple[str, str], int | None] = {}  # as of this batch's start
        named: dict[tuple[str, object], set[str]] = {}  # unique names this batch wrote
        for act in actions:
            found = target(act)
            if found is None or act.kind not in _KINDS:
                return Refusal(ErrorKind.INVALID, "store action of an unknown kind")
            table, obj = found
            key = (table.kind, obj.meta.id)
            if key in versions:
                current = versions[key]
            else:
                stored = self._state.rows[table.kind].get(obj.meta.id)
                current = None if stored is None else stored.meta.version
            refusal = check_write(act.kind, table, obj, current_version=current)
            if refusal is None and table.unique_name and act.kind != objects.StoreAction.REMOVE:
                refusal = self._check_name(table, obj, versions=versions, named=named)
            if refusal is not None:
                return refusal
            if act.kind != objects.StoreAction.UPDATE:
                versions[key] = 0 if act.kind == objects.StoreAction.CREATE else None
        return None

    def _check_name(
        self,
        table: Table[Any],
        obj: StoreObject,
        *,
        versions: dict[tuple[str, str], int | None],
        named: dict[tuple[str, object], set[str]],
    ) -> Refusal | None:
        """Whether `obj`'s name is free: held by no other stored object (unless this batch
        removed it) nor by another object this batch wrote."""
        name = table.index("name", obj)
        stored = self._state.ids(table, "name", name) or set()
        removed = {i for i in stored if versions.get((table.kind, i), 0) is None}
        holders = named.setdefault((table.kind, name), set())
        refusal = check_name(table, obj, holders=(stored - removed) | holders)
        holders.add(obj.meta.id)
        return refusal

    def _write(self, act: objects.StoreAction, version: int) -> Event:
        found = target(act)
        assert found is not None, "checked by _check"
        table, obj = found
        old = self._state.rows[table.kind].get(obj.meta.id)
        action = _EVENT_ACTIONS[act.kind]
        if action is EventAction.REMOVE:
            removed = self._state.drop(table, obj.meta.id)
            return Event(table.kind, action, removed)
        new = clone(obj)  # not a view into the batch, which we need not keep
        new.meta.version = version
        if old is not None:
            new.meta.created_at = old.meta.created_at  # set once, by the create
        self._state.put(table, new)
        return Event(table.kind, action, new, old)

    def _publish(self, events: list[Event], marker: Commit | Reset) -> None:
        self._watches = [w for w in self._watches if not w.closed]
        for watch in self._watches:
            watch.publish(events, marker)


class Batch:
    """Many changes from `MemoryStore.batch`, proposed every `max_actions` writes."""

    def __init__(self, store: MemoryStore, *, max_actions: int) -> None:
        self._store = store
        self._max_actions = max_actions
        self._tx = Tx(store._state, clock=store._clock)
        self.closed = False

    def update(self, fn: Callable[[Tx], T]) -> T:
        """Run `fn` atomically within the batch; propose if enough writes are pending."""
        if self.closed:
            raise RuntimeError("batch used after its function returned")
        _check_outside("batch.update")
        savepoint = self._tx.savepoint()
        try:
            result = self._store._run(self._tx, fn)
        except BaseException:
            self._tx.rollback(savepoint)
            raise
        if self._tx.pending() >= self._max_actions:
            self.flush()
        return result

    def flush(self) -> None:
        """Propose the pending writes now."""
        actions = self._tx.actions()
        self._tx.clear()
        self._store._commit(actions)


def _new_watch(kinds: Iterable[str] | None, maxsize: int, copies: bool) -> Watch:
    wanted = None if kinds is None else frozenset(kinds)
    unknown = sorted((wanted or frozenset()) - BY_KIND.keys())
    if unknown:
        raise InvalidArgument(f"cannot watch unknown kinds: {', '.join(unknown)}")
    return Watch(kinds=wanted, maxsize=maxsize, copies=copies)


@contextmanager
def _running() -> Iterator[None]:
    _inside.depth = getattr(_inside, "depth", 0) + 1
    try:
        yield
    finally:
        _inside.depth -= 1


def _check_outside(what: str) -> None:
    if getattr(_inside, "depth", 0):
        raise RuntimeError(f"store {what} called inside a view or update function")

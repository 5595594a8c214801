"""Transactions: `ReadTx` for `view`, `Tx` (reads + writes) for `update` and `batch`.

A transaction reads the store's rows directly, under the store's lock, and hands out
copies: the rows themselves are never exposed, so no caller can change the store.

A `Tx` records its writes as StoreActions, in order, and keeps an overlay of the
objects it wrote so that its own reads see them. It checks each write as `apply` will
(exists / not found / stale version) and raises at once, so that a transaction bound
to fail is never proposed. `apply` checks again: the store may have moved on by then.

Versions inside a transaction: an object the transaction updated still shows the
version it was read at, and one it created shows 0; so the object read back from the
transaction can be updated again, and `apply` holds every UPDATE of a batch to the
version before the batch. Timestamps come from the proposer's clock (apply must not
read one): `created_at` on create, `updated_at` on every write.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

from api import objects_pb2 as objects
from api.errors import InvalidArgument, NotFound
from manager.store.tables import (
    ALL,
    TABLES,
    ByIdPrefix,
    ByName,
    Selector,
    StoreObject,
    Table,
    action,
    check_name,
    check_write,
    clone,
    table_of,
)

ObjT = TypeVar("ObjT", bound=StoreObject)
Rows = dict[str, dict[str, StoreObject]]  # kind -> id -> object


def _id(obj: StoreObject) -> str:
    return obj.meta.id


class State:
    """The store's rows, their maintained indexes and the version; guarded by the
    store's lock. Rows change only through `put` and `drop`, which keep the indexes."""

    def __init__(self) -> None:
        self.rows: Rows = {t.kind: {} for t in TABLES}
        self.version = 0
        # kind -> index name -> value -> ids
        self.indexes: dict[str, dict[str, dict[object, set[str]]]] = {
            t.kind: {name: {} for name in t.maintained} for t in TABLES
        }

    def put(self, table: Table[Any], obj: StoreObject) -> None:
        rows = self.rows[table.kind]
        old = rows.get(obj.meta.id)
        if old is not None:
            self._unindex(table, old)
        rows[obj.meta.id] = obj
        for name, values in self.indexes[table.kind].items():
            values.setdefault(table.index(name, obj), set()).add(obj.meta.id)

    def drop(self, table: Table[Any], obj_id: str) -> StoreObject:
        obj = self.rows[table.kind].pop(obj_id)
        self._unindex(table, obj)
        return obj

    def ids(self, table: Table[Any], name: str, value: object) -> set[str] | None:
        """The ids whose index `name` is `value`; None if the index is not maintained."""
        values = self.indexes[table.kind].get(name)
        return None if values is None else values.get(value, set())

    def _unindex(self, table: Table[Any], obj: StoreObject) -> None:
        for name, values in self.indexes[table.kind].items():
            key = table.index(name, obj)
            ids = values.get(key)
            if ids is not None:
                ids.discard(obj.meta.id)
                if not ids:
                    del values[key]


class ReadTx:
    """A consistent read of the store; usable only inside the function it was given to."""

    def __init__(self, state: State) -> None:
        self._state = state
        self._active = True

    @property
    def version(self) -> int:
        """The store version this transaction reads."""
        self._check_active()
        return self._state.version

    def get(self, table: Table[ObjT], obj_id: str) -> ObjT | None:
        """A copy of the object with id `obj_id`, or None."""
        self._check_active()
        obj = self._current(table, obj_id)
        return None if obj is None else clone(cast(ObjT, obj))

    def find(self, table: Table[ObjT], *, by: Selector = ALL, copy: bool = True) -> list[ObjT]:
        """Copies of the objects `by` selects (all by default), ordered by id.

        `copy=False` hands out the stored objects themselves, for readers that only
        read them (counting, serializing a reply): the store never changes an object it
        holds (a write replaces it), but such a reader must never change one either."""
        self._check_active()
        found = [o for o in self._candidates(table, by) if by.matches(table, cast(ObjT, o))]
        found.sort(key=_id)
        if not copy:
            return cast(list[ObjT], found)
        return [clone(cast(ObjT, o)) for o in found]

    # ---- overridden by Tx to see its own writes ---------------------------------

    def _current(self, table: Table[Any], obj_id: str) -> StoreObject | None:
        return self._state.rows[table.kind].get(obj_id)

    def _objects(self, table: Table[Any]) -> Iterator[StoreObject]:
        return iter(self._state.rows[table.kind].values())

    def _candidates(self, table: Table[Any], by: Selector) -> Iterator[StoreObject]:
        """The stored objects `by` may select: from a maintained index, else all."""
        key = by.lookup()
        ids = None if key is None else self._state.ids(table, *key)
        if ids is None:
            return self._objects(table)
        rows = self._state.rows[table.kind]
        return (rows[i] for i in list(ids))

    def activate(self, active: bool) -> None:
        """For the store: a transaction is usable only while its function runs."""
        self._active = active

    def _check_active(self) -> None:
        if not self._active:
            raise RuntimeError("store transaction used outside its view/update function")


Key = tuple[str, str]  # (kind, id)
Savepoint = tuple[int, int]  # (actions, undo entries) when it was taken
_ABSENT: Any = object()  # an undo entry's "the overlay had no entry for this key"


class Tx(ReadTx):
    """A read-write transaction: writes are proposed as one StoreBatch when it ends."""

    def __init__(self, state: State, *, clock: Callable[[], float]) -> None:
        super().__init__(state)
        self._clock = clock
        self._actions: list[objects.StoreAction] = []
        self._overlay: dict[Key, StoreObject | None] = {}  # None: removed
        # What each overlay write replaced, so a savepoint costs O(1) to take: a batch
        # takes one per callback, and copying the overlay each time was O(n²).
        self._undo: list[tuple[Key, Any]] = []

    def create(self, obj: StoreObject) -> None:
        """Create `obj` (its meta.id set by the caller); AlreadyExists if taken."""
        self._check_active()
        table = table_of(obj)
        self._refuse(objects.StoreAction.CREATE, table, obj)
        new = clone(obj)
        now = self._clock()
        new.meta.version = 0
        new.meta.created_at = now
        new.meta.updated_at = now
        self._write(objects.StoreAction.CREATE, table, new)

    def update(self, obj: StoreObject) -> None:
        """Replace the object; its meta.version must be the version it was read at."""
        self._check_active()
        table = table_of(obj)
        current = self._refuse(objects.StoreAction.UPDATE, table, obj)
        assert current is not None
        new = clone(obj)
        new.meta.created_at = current.meta.created_at
        new.meta.updated_at = self._clock()
        self._write(objects.StoreAction.UPDATE, table, new)

    def delete(self, table: Table[Any], obj_id: str) -> None:
        """Remove the object with id `obj_id`; NotFound if there is none."""
        self._check_active()
        act = objects.StoreAction(kind=objects.StoreAction.REMOVE)
        stub: StoreObject = getattr(act, table.kind)
        stub.meta.id = obj_id
        self._refuse(objects.StoreAction.REMOVE, table, stub)
        self._actions.append(act)
        self._set_overlay((table.kind, obj_id), None)

    # ---- for the store ---------------------------------------------------------------

    def actions(self) -> list[objects.StoreAction]:
        return list(self._actions)

    def pending(self) -> int:
        """How many writes are waiting to be proposed."""
        return len(self._actions)

    def savepoint(self) -> Savepoint:
        return len(self._actions), len(self._undo)

    def rollback(self, savepoint: Savepoint) -> None:
        actions, undo = savepoint
        del self._actions[actions:]
        while len(self._undo) > undo:
            key, previous = self._undo.pop()
            if previous is _ABSENT:
                del self._overlay[key]
            else:
                self._overlay[key] = previous

    def clear(self) -> None:
        """Forget the writes: they were proposed, and the rows now hold them."""
        self._actions.clear()
        self._overlay.clear()
        self._undo.clear()

    # ---- internals ---------------------------------------------------------------------

    def _refuse(
        self, kind: objects.StoreAction.Kind.ValueType, table: Table[Any], obj: StoreObject
    ) -> StoreObject | None:
        """Raise if `apply` would refuse the write; return the current object."""
        if not obj.meta.id:
            raise InvalidArgument(f"{table.kind} has no id")
        current = self._current(table, obj.meta.id)
        version = None if current is None else current.meta.version
        refusal = check_write(kind, table, obj, current_version=version)
        if refusal is None and table.unique_name and kind != objects.StoreAction.REMOVE:
            name = table.index("name", obj)
            holders = [o.meta.id for o in self.find(table, by=ByName(str(name)), copy=False)]
            refusal = check_name(table, obj, holders=holders)
        if refusal is not None:
            raise refusal.error()
        return current

    def _write(
        self, kind: objects.StoreAction.Kind.ValueType, table: Table[Any], obj: StoreObject
    ) -> None:
        self._actions.append(action(kind, obj))
        self._set_overlay((table.kind, obj.meta.id), obj)

    def _set_overlay(self, key: Key, obj: StoreObject | None) -> None:
        self._undo.append((key, self._overlay.get(key, _ABSENT)))
        self._overlay[key] = obj

    def _current(self, table: Table[Any], obj_id: str) -> StoreObject | None:
        key = (table.kind, obj_id)
        if key in self._overlay:
            return self._overlay[key]
        return super()._current(table, obj_id)

    def _objects(self, table: Table[Any]) -> Iterator[StoreObject]:
        return self._with_pending(table, iter(self._state.rows[table.kind].values()))

    def _candidates(self, table: Table[Any], by: Selector) -> Iterator[StoreObject]:
        return self._with_pending(table, super()._candidates(table, by))

    def _with_pending(
        self, table: Table[Any], stored: Iterator[StoreObject]
    ) -> Iterator[StoreObject]:
        """`stored` as this transaction sees it: its own writes replace the rows."""
        pending = {i: o for (k, i), o in self._overlay.items() if k == table.kind}
        for obj in stored:
            if obj.meta.id not in pending:
                yield obj
        yield from (o for o in pending.values() if o is not None)


def resolve(tx: ReadTx, table: Table[ObjT], ref: str) -> ObjT:
    """The object `ref` names, as docker resolves names: exact id, else name (the
    table's "name" index), else a unique id prefix. NotFound if none matches,
    InvalidArgument if several do."""
    obj = tx.get(table, ref) if ref else None
    if obj is not None:
        return obj
    # Only a non-empty ref may match: an empty prefix would match every object.
    matches = tx.find(table, by=ByName(ref)) if ref and "name" in table.indexes else []
    if ref and not matches:
        matches = tx.find(table, by=ByIdPrefix(ref))
    if not matches:
        raise NotFound(f"{table.kind} {ref} not found")
    if len(matches) > 1:
        raise InvalidArgument(f"{table.kind} {ref} is ambiguous ({len(matches)} matches found)")
    return matches[0]

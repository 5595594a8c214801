"""The generic per-kind table machinery: one `Table` entry per object kind.

A kind is named by its field in the `StoreAction.target` oneof ("node", "cluster"), and
its objects travel in the `StoreSnapshot` field named by `plural` ("nodes", "clusters").
Everything else in the store (transactions, apply, snapshots, watches) is written once
against `Table`, so adding Service, Task, Network, Secret or Config is one entry in
`TABLES` (plus optional typed helpers in a module of its own).

Lookups other than by id go through named indexes: `ByName` uses the table's "name"
index (lowercased, as swarmkit does), `ByRole` its "role" index. A table without the
index a selector needs refuses the query with InvalidArgument.

The write rules shared by a transaction's early checks and by `apply` live here too
(`check_write`), so that a refusal reads the same wherever it is detected.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Generic, Protocol, TypeVar

from api import objects_pb2 as objects
from api.errors import AlreadyExists, InvalidArgument, NotFound, PyswarmError, SequenceConflict

OUT_OF_SEQUENCE: Final = "update out of sequence"


class StoreObject(Protocol):
    """What every stored kind is: a protobuf message with a `Meta`."""

    @property
    def meta(self) -> objects.Meta: ...


ObjT = TypeVar("ObjT", bound=StoreObject)


@dataclass(frozen=True)
class Table(Generic[ObjT]):
    """One kind of object: where it travels in protos and how it can be looked up."""

    kind: str  # its field in StoreAction.target
    plural: str  # its field in StoreSnapshot
    message: type[ObjT]
    indexes: Mapping[str, Callable[[ObjT], object]]

    def index(self, name: str, obj: ObjT) -> object:
        """The value of index `name` for `obj`; InvalidArgument if the kind has none."""
        try:
            key = self.indexes[name]
        except KeyError:
            raise InvalidArgument(f"{self.plural} cannot be found by {name}") from None
        return key(obj)


# ---- selectors (find_*(tx, by=...)) --------------------------------------------------


class Selector(ABC):
    """Which objects a find returns."""

    @abstractmethod
    def matches(self, table: Table[ObjT], obj: ObjT) -> bool: ...


@dataclass(frozen=True)
class All(Selector):
    """Every object of the kind."""

    def matches(self, table: Table[ObjT], obj: ObjT) -> bool:
        return True


ALL: Final = All()


@dataclass(frozen=True)
class ByIdPrefix(Selector):
    """Objects whose id starts with `prefix`."""

    prefix: str

    def matches(self, table: Table[ObjT], obj: ObjT) -> bool:
        return obj.meta.id.startswith(self.prefix)


@dataclass(frozen=True)
class ByName(Selector):
    """Objects whose name (a node's hostname) equals `name`, ignoring case."""

    name: str

    def matches(self, table: Table[ObjT], obj: ObjT) -> bool:
        return table.index("name", obj) == self.name.lower()


@dataclass(frozen=True)
class ByRole(Selector):
    """Nodes whose current certificate role is `role`."""

    role: objects.NodeRole.ValueType

    def matches(self, table: Table[ObjT], obj: ObjT) -> bool:
        return table.index("role", obj) == self.role


# ---- the tables: adding a kind is one entry here ---------------------------------------


def _node_name(node: objects.Node) -> str:
    return node.description.hostname.lower()


def _node_role(node: objects.Node) -> object:
    return node.role


def _cluster_name(cluster: objects.Cluster) -> str:
    return cluster.spec.name.lower()


NODES: Final = Table(
    kind="node",
    plural="nodes",
    message=objects.Node,
    indexes={"name": _node_name, "role": _node_role},
)
CLUSTERS: Final = Table(
    kind="cluster",
    plural="clusters",
    message=objects.Cluster,
    indexes={"name": _cluster_name},
)
TABLES: Final[tuple[Table[Any], ...]] = (NODES, CLUSTERS)
BY_KIND: Final[Mapping[str, Table[Any]]] = {t.kind: t for t in TABLES}
BY_MESSAGE: Final[Mapping[type[Any], Table[Any]]] = {t.message: t for t in TABLES}


def table_of(obj: StoreObject) -> Table[Any]:
    """The table an object belongs to, by its message type."""
    try:
        return BY_MESSAGE[type(obj)]
    except KeyError:
        raise InvalidArgument(f"{type(obj).__name__} objects are not stored") from None


# ---- actions and the write rules ---------------------------------------------------------


def action(kind: objects.StoreAction.Kind.ValueType, obj: StoreObject) -> objects.StoreAction:
    """A StoreAction carrying a copy of `obj` in its kind's oneof field."""
    out = objects.StoreAction(kind=kind)
    getattr(out, table_of(obj).kind).CopyFrom(obj)
    return out


def target(act: objects.StoreAction) -> tuple[Table[Any], StoreObject] | None:
    """The table and object an action writes; None if this version does not know it."""
    field = act.WhichOneof("target")
    if field is None or field not in BY_KIND:
        return None
    obj: StoreObject = getattr(act, field)
    return BY_KIND[field], obj


class ErrorKind(StrEnum):
    """`ApplyResult.error_kind` values; the empty string means applied."""

    EXISTS = "exists"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    INVALID = "invalid"  # an action this manager cannot read (no object, no id)


@dataclass(frozen=True)
class Refusal:
    """Why a write is refused, as carried in ApplyResult."""

    kind: ErrorKind
    message: str

    def error(self) -> PyswarmError:
        return error_for(self.kind, self.message)


_ERRORS: Final[Mapping[str, type[PyswarmError]]] = {
    ErrorKind.EXISTS: AlreadyExists,
    ErrorKind.NOT_FOUND: NotFound,
    ErrorKind.CONFLICT: SequenceConflict,
    ErrorKind.INVALID: InvalidArgument,
}


def error_for(kind: str, message: str) -> PyswarmError:
    """The exception the proposer raises for an ApplyResult error."""
    return _ERRORS.get(kind, PyswarmError)(message)


def check_write(
    kind: objects.StoreAction.Kind.ValueType,
    table: Table[Any],
    obj: StoreObject,
    *,
    current_version: int | None,
) -> Refusal | None:
    """Whether `obj` may be written, given the version it currently has (None: absent).

    Within one batch, "current" is the version before the batch (0 for an object the
    batch itself created), which is also what a transaction shows for its own writes.
    """
    obj_id = obj.meta.id
    if not obj_id:
        return Refusal(ErrorKind.INVALID, f"{table.kind} has no id")
    if kind == objects.StoreAction.CREATE:
        if current_version is not None:
            return Refusal(ErrorKind.EXISTS, f"{table.kind} {obj_id} already exists")
        return None
    if current_version is None:
        return Refusal(ErrorKind.NOT_FOUND, f"{table.kind} {obj_id} not found")
    if kind == objects.StoreAction.UPDATE and obj.meta.version != current_version:
        return Refusal(ErrorKind.CONFLICT, OUT_OF_SEQUENCE)
    return None

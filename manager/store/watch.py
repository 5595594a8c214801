"""Watch queues: what the store publishes after each applied batch.

For every applied batch, a watch receives one `Event` per action, in the batch's order,
then one `Commit(version)` marker; `restore` sends `Reset(version)` instead (everything
may have changed: re-list). A watch limited to some kinds gets only their events, and a
Commit only for batches that touched one of them.

The store publishes while holding its lock, from the Raft thread, so publishing never
blocks: each watch has a bounded buffer, and a consumer that falls `maxsize` items
behind is cut off — the watch is closed and marked `overflowed`, and the consumer is
expected to re-list from a fresh `view_and_watch`. Closing (either way) discards what
was still buffered.

Events hold the store's own objects, which the store never mutates (a write replaces
an object, it does not change it); `get` hands every consumer its own copies, unless
the watch was made with `copies=False` by a consumer that only reads them.

Usage::

    with store.watch(kinds={"node"}) as watch:
        for item in watch:  # ends when the watch is closed
            if isinstance(item, Event) and item.action is EventAction.UPDATE: ...
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Final

from manager.store.tables import StoreObject, clone

DEFAULT_MAXSIZE: Final = 10_000


class EventAction(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    REMOVE = "remove"


@dataclass(frozen=True)
class Event:
    """One applied action. `obj` is the object as written (as it was, for a remove);
    `old` is the object before an update, None for create and remove."""

    kind: str
    action: EventAction
    obj: StoreObject
    old: StoreObject | None = None


@dataclass(frozen=True)
class Commit:
    """The end of one applied batch; the store is now at `version`."""

    version: int


@dataclass(frozen=True)
class Reset:
    """The store was replaced by a snapshot at `version`: re-list everything."""

    version: int


WatchItem = Event | Commit | Reset


class WatchClosed(Exception):
    """The watch was closed by its consumer or, if `overflowed`, by the store."""


class Watch:
    """A thread-safe bounded queue of WatchItems; iterate it or call `get`."""

    def __init__(
        self,
        *,
        kinds: Iterable[str] | None = None,
        maxsize: int = DEFAULT_MAXSIZE,
        copies: bool = True,
    ):
        self.kinds: frozenset[str] | None = None if kinds is None else frozenset(kinds)
        self.maxsize = maxsize
        # False: events carry the store's own objects (a read-only consumer: the leader's
        # pipeline stages, which at 100,000 tasks cannot afford a copy per event each).
        self.copies = copies
        self._items: deque[WatchItem] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self._overflowed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def overflowed(self) -> bool:
        """The consumer fell too far behind and missed events: it must re-list."""
        return self._overflowed

    def get(self, timeout: float | None = None) -> WatchItem | None:
        """The next item; None after `timeout` seconds; WatchClosed once closed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                return None
            if self._closed:
                raise WatchClosed("watch overflowed" if self._overflowed else "watch closed")
            item = self._items.popleft()
        return _copied(item) if self.copies else item

    def __iter__(self) -> Iterator[WatchItem]:
        while True:
            try:
                item = self.get()
            except WatchClosed:
                return
            if item is not None:
                yield item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._items.clear()
            self._cond.notify_all()

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- the store's side -------------------------------------------------------------

    def publish(self, events: Iterable[Event], marker: Commit | Reset) -> None:
        """Queue a batch's events and its marker; never blocks (overflow closes)."""
        mine = [e for e in events if self.kinds is None or e.kind in self.kinds]
        if isinstance(marker, Commit) and self.kinds is not None and not mine:
            return
        with self._cond:
            if self._closed:
                return
            if len(self._items) + len(mine) + 1 > self.maxsize:
                self._overflowed = True
                self._closed = True
                self._items.clear()
            else:
                self._items.extend(mine)
                self._items.append(marker)
            self._cond.notify_all()


def _copied(item: WatchItem) -> WatchItem:
    if not isinstance(item, Event):
        return item
    old = None if item.old is None else clone(item.old)
    return Event(item.kind, item.action, clone(item.obj), old)

"""`StageThread`: the one thread of a small leader-only stage (allocator, network views,
status batcher).

`start()` runs the subclass's `run()` on a daemon thread until `stop()`, which sets
`stopping` and joins it; both may be called again on the next leadership.
`FollowingStage` is the level-triggered kind: `follow()` lists what it needs and follows
the store's watch; it returns (or raises) to be started over from a fresh listing.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod

log = logging.getLogger(__name__)


class StageThread(ABC):
    thread_name = "stage"

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.stopping.clear()
        self._thread = threading.Thread(target=self.run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._thread = None

    @abstractmethod
    def run(self) -> None:
        """Work until `stopping` is set."""


class FollowingStage(StageThread):
    """A stage that re-lists and follows the store until stopped, and never dies: a
    failure is logged and the stage starts over after a pause."""

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.follow()
            except Exception:
                log.exception("%s failed; starting over", self.thread_name)
                self.stopping.wait(0.5)

    @abstractmethod
    def follow(self) -> None:
        """List, then follow the watch; return on a Reset or an overflow."""

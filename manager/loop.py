"""`StageThread`: the one thread of a small leader-only stage (allocator, status batcher).

`start()` runs the subclass's `run()` on a daemon thread until `stop()`, which sets
`stopping` and joins it; both may be called again on the next leadership.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod


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

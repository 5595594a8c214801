"""The leader-only pipeline: orchestrators → allocator → scheduler (DESIGN.md).

Each stage is a loop over the replicated store that runs only on the Raft leader,
started when this manager becomes leader and stopped (in reverse order) when it is
not: a stage never acts on a store that is no longer being written by its leader.
The dispatcher, the fourth stage, is started by the manager itself (it also serves
sessions). Stages talk only through the store: each reads what the one before wrote.
"""

from __future__ import annotations

import threading
from typing import Protocol

from manager import store as st


class Stage(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


class Pipeline:
    def __init__(self, store: st.MemoryStore) -> None:
        from manager.allocator import Allocator
        from manager.orchestrator import Orchestrator
        from manager.scheduler import Scheduler

        self.orchestrator = Orchestrator(store)
        self.allocator = Allocator(store)
        self.scheduler = Scheduler(store)
        self._stages: list[Stage] = [self.orchestrator, self.allocator, self.scheduler]
        self._lock = threading.Lock()
        self._running = False

    def start(self) -> None:
        with self._lock:
            if self._running:
                return
            self._running = True
            for stage in self._stages:
                stage.start()

    def stop(self) -> None:
        with self._lock:
            if not self._running:
                return
            self._running = False
            for stage in reversed(self._stages):
                stage.stop()

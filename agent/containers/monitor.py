"""Learns when containers exit, without a thread or a child process per container.

conmon exits right after it has written the container's exit code, so the engine
watches conmon through a pidfd (Linux ≥ 5.3), which works for processes that are
not our children — including the conmons a previous daemon started (live restore).
One thread waits on all pidfds with a selector; a self-pipe wakes it for changes.
"""

from __future__ import annotations

import logging
import os
import selectors
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class ExitMonitor:
    def __init__(self, on_exit: Callable[[str], None]) -> None:
        self._on_exit = on_exit
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._fds: dict[str, int] = {}
        self._wake_r, self._wake_w = os.pipe()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="exit-monitor", daemon=True)
        self._thread.start()

    def watch(self, key: str, pid: int) -> None:
        """Call on_exit(key) once `pid` has exited (at once if it already has)."""
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            threading.Thread(target=self._notify, args=(key,), daemon=True).start()
            return
        with self._lock:
            old = self._fds.pop(key, None)
            if old is not None:
                self._selector.unregister(old)
                os.close(old)
            self._fds[key] = fd
            self._selector.register(fd, selectors.EVENT_READ, key)
        os.write(self._wake_w, b"x")

    def unwatch(self, key: str) -> None:
        with self._lock:
            fd = self._fds.pop(key, None)
            if fd is not None:
                self._selector.unregister(fd)
                os.close(fd)

    def close(self) -> None:
        self._closed = True
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _run(self) -> None:
        while not self._closed:
            for sel_key, _ in self._selector.select():
                if sel_key.data is None:
                    os.read(self._wake_r, 4096)
                    continue
                key = str(sel_key.data)
                with self._lock:
                    if self._fds.get(key) != sel_key.fd:
                        continue
                    del self._fds[key]
                    self._selector.unregister(sel_key.fd)
                    os.close(sel_key.fd)
                self._notify(key)

    def _notify(self, key: str) -> None:
        try:
            self._on_exit(key)
        except Exception:
            log.exception("handling the exit of %s", key[:12])

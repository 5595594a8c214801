"""The swarm's own image registry: every manager serves one on port 5000 over TLS.

It is issue 3's registry server (manager.registry.app) run inside the daemon, on a
thread with its own event loop, with the manager's node certificate — signed by the
cluster CA and naming the manager's address — so every node of the swarm, which
trusts that CA, pulls from it without certificates to install or insecure-registry
flags. Each manager serves its own storage (<data-root>/swarm/registry): push to the
manager you pull from. A renewed certificate is picked up on the next handshake.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import threading
from pathlib import Path
from typing import Protocol

from aiohttp import web

from api.credentials import write_atomic
from manager.registry.app import Config, make_app

log = logging.getLogger(__name__)
PORT = 5000


class CredentialSource(Protocol):
    generation: int

    def triple(self) -> tuple[bytes, bytes, bytes]: ...


class ClusterRegistry:
    def __init__(
        self, root: Path, *, host: str, port: int = PORT, credentials: CredentialSource
    ) -> None:
        self.root = root
        self.host = host
        self.port = port
        self.credentials = credentials
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._generation = -1
        self._context: ssl.SSLContext | None = None

    # ---- TLS -------------------------------------------------------------------

    def _load(self) -> ssl.SSLContext:
        key, cert, ca = self.credentials.triple()
        tls = self.root.parent / "registry-tls"
        tls.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(tls / "chain.pem", cert + ca, mode=0o600)
        write_atomic(tls / "key.pem", key, mode=0o600)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls / "chain.pem", tls / "key.pem")
        os.unlink(tls / "key.pem")  # loaded: keep the key in memory only
        context.sni_callback = self._renewed
        self._generation = self.credentials.generation
        return context

    def _renewed(self, sock: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        if self.credentials.generation != self._generation:
            self._context = self._load()
        if self._context is not None and self._context is not context:
            sock.context = self._context

    # ---- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._context = self._load()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # reported to start(), which raises it
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="cluster-registry", daemon=True)
        self._thread.start()
        ready.wait(timeout=30)
        if failure:
            raise failure[0]
        log.info("cluster registry on https://%s:%d", self.host, self.port)

    async def _serve(self) -> None:
        runner = web.AppRunner(make_app(Config(root=self.root)), access_log=None)
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, self.host, self.port, ssl_context=self._context)
        await site.start()

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
        self._thread = None

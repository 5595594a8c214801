"""`pyswarm nodesim`: run many simulated nodes in this process, for scale tests."""

from __future__ import annotations

import signal
import tempfile
import threading
from pathlib import Path

import click

from cli.main import CommandFailure


@click.command()
@click.option("--manager", "manager", required=True, help="A manager's HOST:PORT.")
@click.option("--token", required=True, help="A worker join token.")
@click.option(
    "--nodes", default=100, show_default=True, type=click.IntRange(1, 5000), help="How many."
)
@click.option("--prefix", default="sim", show_default=True, help="Hostname prefix.")
@click.option(
    "--state-dir", type=click.Path(path_type=Path), help="Where the nodes' certificates go."
)
def nodesim(manager: str, token: str, nodes: int, prefix: str, state_dir: Path | None) -> None:
    """Run NODES simulated swarm nodes: real joins, sessions, heartbeats and task
    reports, with a simulated executor (tasks walk ACCEPTED → RUNNING with short
    delays; no containers). Runs until interrupted (SIGINT/SIGTERM)."""
    from agent.swarm.nodesim import NodeSim
    from api.errors import PyswarmError

    root = state_dir or Path(tempfile.mkdtemp(prefix="pyswarm-nodesim-"))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    sim = NodeSim(manager=manager, token=token, nodes=nodes, root=root, prefix=prefix)
    try:
        sim.start()
        if not sim.wait_ready(timeout=120):
            raise CommandFailure("nodesim: not every node has a session after 120 s")
        click.echo(f"{nodes} simulated nodes ready", err=True)
        while not stop.wait(1.0):
            pass
    except PyswarmError as exc:
        raise CommandFailure(f"nodesim: {exc}") from None
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()

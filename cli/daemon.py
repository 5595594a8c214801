"""`pyswarm daemon`: the process every host runs (like dockerd).

This is the one module that imports both the engine (`agent`) and networking
(`overlay`) — and later the manager — and wires them together, like swarmkit's
node/. Start-up order, each step undone on failure:
1. host preparation (cgroup quirk, overlayfs), with a clear message if impossible;
2. take the data root's lock, so two daemons never share one data root;
3. build the engine and adopt what a previous daemon left (live restore);
4. serve the API on the unix socket (mode 0660), then metrics.
SIGTERM/SIGINT stop serving and close the engine; containers keep running for the
next daemon to adopt.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import signal
import socket
import sys
import threading
from concurrent import futures
from pathlib import Path
from types import FrameType

import click

DEFAULT_HOST = "unix:///run/pyswarm/pyswarm.sock"
DEFAULT_DATA_ROOT = "/var/lib/pyswarm"
log = logging.getLogger("pyswarm.daemon")


class DaemonError(Exception):
    pass


def socket_path(host: str) -> Path:
    if not host.startswith("unix://"):
        raise DaemonError(f"unsupported --host {host!r}: only unix:///path.sock is served")
    return Path(host[len("unix://") :])


def lock_data_root(data_root: Path) -> int:
    data_root.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_root / "pyswarm.pid", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise DaemonError(
            f"another pyswarm daemon (pid {holder}) is using the data root {data_root}; "
            "stop it or choose another --data-root"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def claim_socket(path: Path) -> None:
    """Remove a stale socket file, but never one a live daemon still answers on."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()
    else:
        raise DaemonError(f"another daemon is already serving on unix://{path}")
    finally:
        probe.close()


def parse_metrics_addr(addr: str) -> tuple[str, int] | None:
    if addr in ("", "none", "off"):
        return None
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        raise DaemonError(f"invalid --metrics-addr {addr!r} (want HOST:PORT, or '' to disable)")
    return host, int(port)


def run_daemon(
    *,
    data_root: Path,
    host: str,
    runtime: str,
    metrics_addr: str,
    bridge_subnet: str,
    cgroup_parent: str,
    bridge_idle_grace: float = 10.0,
    insecure_registries: tuple[str, ...] = (),
    default_registry: str = "docker.io",
    hostname: str = "",
) -> None:
    import grpc
    from prometheus_client import REGISTRY, start_http_server

    from agent import hostprep
    from agent.engine import Engine, EngineOptions
    from agent.metrics import EngineCollector
    from agent.server import EngineServicer
    from api import engine_pb2_grpc, swarm_pb2_grpc
    from api.errors import PyswarmError
    from cli.localcontrol import LocalControl
    from cli.swarmnode import SwarmNode
    from manager.metrics import SwarmCollector
    from overlay.bridge import BridgeDriver
    from overlay.swarmnet import SwarmNetworks

    for line in hostprep.prepare_host():
        log.info("host preparation: %s", line)
    sock = socket_path(host)
    metrics = parse_metrics_addr(metrics_addr)
    lock_fd = lock_data_root(data_root)
    claim_socket(sock)
    tag = hashlib.sha256(str(data_root.resolve()).encode()).hexdigest()[:6]
    bridge = BridgeDriver(
        state_dir=data_root / "network",
        subnet=bridge_subnet,
        netns_prefix=f"pyswarm-{tag}-",
        idle_grace=bridge_idle_grace,
    )
    network = SwarmNetworks(bridge, state_dir=data_root / "network", prefix=f"pyswarm-{tag}-")
    try:
        options = EngineOptions(
            data_root=data_root,
            runtime=runtime,
            cgroup_parent=cgroup_parent,
            insecure_registries=insecure_registries,
            default_registry=default_registry,
        )
        engine = Engine(options, network=network)
        engine.start()
    except PyswarmError as exc:
        raise DaemonError(exc.message) from None
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="rpc"),
        options=[("grpc.max_receive_message_length", 64 << 20)],
    )
    engine_pb2_grpc.add_EngineServicer_to_server(EngineServicer(engine), server)
    swarm_node = SwarmNode(
        data_root,
        hostname=hostname or socket.gethostname(),
        registry_cas=options.registry_cas,
        engine=engine,
        networks=network,
    )
    swarm_pb2_grpc.add_SwarmServicer_to_server(swarm_node, server)
    swarm_pb2_grpc.add_ControlServicer_to_server(LocalControl(swarm_node), server)
    # Handlers before the socket exists: whoever sees the socket may signal us, and a
    # SIGTERM must then be a clean shutdown, not the default exit that leaves it behind.
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # The socket is created by add_insecure_port: 0660 from birth, never wider.
    old_umask = os.umask(0o117)
    try:
        server.add_insecure_port(f"unix://{sock}")
    finally:
        os.umask(old_umask)
    server.start()
    try:
        swarm_node.resume()
    except Exception as exc:  # the engine keeps serving; `pyswarm swarm leave --force` recovers
        log.error("could not rejoin the swarm: %s", getattr(exc, "message", exc))
    if metrics is not None:
        try:
            REGISTRY.register(EngineCollector(engine))
            REGISTRY.register(SwarmCollector(lambda: swarm_node.manager))
            start_http_server(metrics[1], addr=metrics[0])
        except OSError as exc:
            log.warning("metrics not served on %s: %s", metrics_addr, exc)
    log.info("pyswarm daemon ready: unix://%s, data root %s, runtime %s", sock, data_root, runtime)

    done.wait()
    server.stop(grace=2).wait()
    swarm_node.close()
    engine.close()
    network.close()
    sock.unlink(missing_ok=True)
    os.close(lock_fd)
    log.info("pyswarm daemon stopped")


@click.command("daemon")
@click.option(
    "--data-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DATA_ROOT,
    show_default=True,
    help="Directory for images, containers and volumes.",
)
@click.option(
    "-H",
    "--host",
    envvar="PYSWARM_HOST",
    default=DEFAULT_HOST,
    show_default=True,
    help="Socket to serve the API on.",
)
@click.option(
    "--runtime",
    type=click.Choice(["crun", "runc"]),
    default="crun",
    show_default=True,
    help="OCI runtime for containers.",
)
@click.option(
    "--metrics-addr",
    default="127.0.0.1:9323",
    show_default=True,
    help="Address for Prometheus metrics ('' to disable).",
)
@click.option(
    "--bridge-subnet",
    default="172.30.0.0/16",
    show_default=True,
    help="Subnet of the pyswarm0 bridge network.",
)
@click.option(
    "--bridge-idle-grace",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds an unused pyswarm0 bridge and its nftables table stay before removal.",
)
@click.option(
    "--cgroup-parent",
    default="/pyswarm",
    show_default=True,
    help="Parent cgroup of the containers' cgroups.",
)
@click.option(
    "--insecure-registry",
    "insecure_registries",
    multiple=True,
    help="Registry (HOST[:PORT]) to reach over plain HTTP; repeatable.",
)
@click.option(
    "--default-registry",
    default="docker.io",
    show_default=True,
    help="Registry for unqualified image names ('' = never pull them).",
)
@click.option(
    "--hostname",
    default="",
    help="Name this node reports to the swarm (default: the host's name).",
)
@click.option("--debug", is_flag=True, help="Log debug messages.")
def daemon(
    data_root: Path,
    host: str,
    runtime: str,
    metrics_addr: str,
    bridge_subnet: str,
    bridge_idle_grace: float,
    cgroup_parent: str,
    insecure_registries: tuple[str, ...],
    default_registry: str,
    hostname: str,
    debug: bool,
) -> None:
    """Run the pyswarm daemon (the engine of this host), serving the API on a unix socket."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if os.geteuid() != 0:
        click.echo("pyswarm daemon: must run as root", err=True)
        sys.exit(1)
    try:
        run_daemon(
            data_root=data_root,
            host=host,
            runtime=runtime,
            metrics_addr=metrics_addr,
            bridge_subnet=bridge_subnet,
            bridge_idle_grace=bridge_idle_grace,
            cgroup_parent=cgroup_parent,
            insecure_registries=insecure_registries,
            default_registry=default_registry,
            hostname=hostname,
        )
    except DaemonError as exc:
        click.echo(f"pyswarm daemon: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:  # start-up failures from the host, in one line
        from agent.hostprep import HostPrepError

        if isinstance(exc, HostPrepError):
            click.echo(f"pyswarm daemon: host preparation failed: {exc}", err=True)
            sys.exit(1)
        raise

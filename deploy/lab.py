"""The lab: a swarm of pyswarm hosts on one machine, one network namespace per host.

    >>> lab = up("demo", managers=3, workers=2)    # hosts m1..m3, w1..w2, in a swarm
    >>> exec_in("demo", "m1", ["pyswarm", "node", "ls"])   # never returns
    >>> down("demo")

Layout of a lab named NAME (the name is [a-z0-9-], at most 24 characters, so every
name derived from it stays short):

- a switch: the namespace `pyswarm-lab-NAME-sw` holding the bridge `br0` (no address);
- a host per node, `pyswarm-lab-NAME-HOST` (HOST is m1..mN, then w1..wM), whose `eth0`
  is a veth whose other end, named HOST, is a port of `br0`;
- a `pyswarm daemon` per host, run under `nsenter --net=` (never `ip netns exec`, which
  remounts /sys and hides the cgroup v1 mounts), with the data root
  /var/lib/pyswarm/lab/NAME/HOST, the socket /run/pyswarm/lab/NAME/HOST.sock, the log
  /run/pyswarm/lab/NAME/HOST.log and the cgroup parent /pyswarm-lab-NAME-HOST;
- the state, /run/pyswarm/lab/NAME/state.json: the whole plan (hosts, addresses,
  namespaces, paths), written before anything is made, then each daemon's pid as it
  starts. `down` works from it, so it can clean a half-made lab; without it (/run is
  wiped at boot, /var/lib is not) it goes by the namespaces and data roots it finds.

Address plan, in 198.18.0.0/15 (the benchmarking range, RFC 2544) with prefix /15 on
every eth0: manager mI is 198.18.0.(10+I), worker wJ is 198.18.1.(10+J), for I and J up
to 99 (m1 = 198.18.0.11, w1 = 198.18.1.11). The hosts reach one another through the
switch and nothing else: no host has a default route, and nothing in a lab is linked to
the machine's own interfaces (DESIGN.md, network safety).

Order in `up`: plan and state first; then the switch, then each host's namespace, veth
and address; then every daemon at once, waited for together (the socket answers); then
`form_swarm` (unless told not to). If any step fails, `down` undoes all of it. `down`
lives in deploy.labdown (its order and invariants are described there) and is
re-exported here: `deploy.lab.down` is the entry point the CLI and tests use.

Namespaces are made and configured with pyroute2 from threads that enter them
(overlay.netns), never by forking: this module may run inside a process with threads.
"""

from __future__ import annotations

import enum
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from ipaddress import IPv4Address, IPv4Network
from itertools import pairwise
from pathlib import Path
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")

RUN_ROOT = Path("/run/pyswarm/lab")
DATA_ROOT = Path("/var/lib/pyswarm/lab")
NETNS_DIR = Path("/run/netns")
NETWORK = IPv4Network("198.18.0.0/15")
MANAGER_BASE = IPv4Address("198.18.0.10")
WORKER_BASE = IPv4Address("198.18.1.10")
MAX_PER_ROLE = 99
MAX_NAME = 24
BRIDGE = "br0"
HOST_IFNAME = "eth0"
SWARM_PORT = 2377
START_TIMEOUT = 30.0  # every daemon answering on its socket
READY_TIMEOUT = 60.0  # every node Ready in `node ls`
STOP_TIMEOUT = 15.0  # SIGTERM to exit, before SIGKILL
CLI_TIMEOUT = 60.0
METRICS_ADDR = "127.0.0.1:9323"  # `lab exec m1 -- curl -s 127.0.0.1:9323/metrics`

_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
_HEARTBEAT = re.compile(r"\d+(?:\.\d+)?(?:ms|s|m|h)")

# Daemons started by this process, kept so that they are not garbage collected while
# running (Popen warns) and so that `down` reaps them here.
_children: dict[int, subprocess.Popen[bytes]] = {}


class LabError(Exception):
    """A lab operation failed; the message is one line."""


class Role(enum.StrEnum):
    MANAGER = "manager"
    WORKER = "worker"


@dataclass
class Host:
    name: str
    role: Role
    address: str
    netns: str
    sock: str
    log: str
    data_root: str
    cgroup_parent: str
    pid: int | None = None

    @property
    def host(self) -> str:
        """The daemon's address, as PYSWARM_HOST takes it."""
        return f"unix://{self.sock}"

    @property
    def netns_path(self) -> str:
        return str(NETNS_DIR / self.netns)

    def row(self) -> dict[str, Any]:
        """What `lab ls --format json` prints for this host."""
        return {
            "name": self.name,
            "role": self.role.value,
            "address": self.address,
            "netns": self.netns,
            "pid": self.pid,
            "host": self.host,
        }


@dataclass
class Lab:
    name: str
    switch: str
    heartbeat: str
    hosts: list[Host] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return RUN_ROOT / self.name

    @property
    def data_dir(self) -> Path:
        return DATA_ROOT / self.name

    def host(self, node: str) -> Host:
        for host in self.hosts:
            if host.name == node:
                return host
        names = ", ".join(h.name for h in self.hosts)
        raise LabError(f"no host {node} in lab {self.name} (hosts: {names})")

    def save(self) -> None:
        """Write state.json atomically, so a reader never sees half of it."""
        doc = asdict(self)
        tmp = self.run_dir / "state.json.tmp"
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        tmp.replace(self.run_dir / "state.json")

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Lab:
        hosts = [Host(**{**h, "role": Role(h["role"])}) for h in doc["hosts"]]
        return cls(name=doc["name"], switch=doc["switch"], heartbeat=doc["heartbeat"], hosts=hosts)


# -- planning -----------------------------------------------------------------------


def check_name(name: str) -> None:
    if not _NAME.fullmatch(name) or len(name) > MAX_NAME:
        raise LabError(
            f"invalid lab name {name!r}: use a-z, 0-9 and '-' (not at either end), "
            f"at most {MAX_NAME} characters"
        )


def plan(name: str, *, managers: int, workers: int, heartbeat: str = "1s") -> Lab:
    """The lab's hosts, addresses and paths; makes nothing."""
    check_name(name)
    if not 1 <= managers <= MAX_PER_ROLE or not 0 <= workers <= MAX_PER_ROLE:
        raise LabError(f"a lab has 1 to {MAX_PER_ROLE} managers and 0 to {MAX_PER_ROLE} workers")
    if not _HEARTBEAT.fullmatch(heartbeat):
        raise LabError(f"invalid heartbeat {heartbeat!r} (want a duration such as 1s or 500ms)")
    lab = Lab(name=name, switch=f"pyswarm-lab-{name}-sw", heartbeat=heartbeat)
    lab.hosts += [_plan_host(lab, f"m{i}") for i in range(1, managers + 1)]
    lab.hosts += [_plan_host(lab, f"w{i}") for i in range(1, workers + 1)]
    return lab


def _plan_host(lab: Lab, name: str) -> Host:
    """Host `name` (mI or wJ) of the lab, its address by the plan in the docstring."""
    role, base = (Role.MANAGER, MANAGER_BASE) if name[0] == "m" else (Role.WORKER, WORKER_BASE)
    return Host(
        name=name,
        role=role,
        address=str(base + int(name[1:])),
        netns=f"pyswarm-lab-{lab.name}-{name}",
        sock=str(lab.run_dir / f"{name}.sock"),
        log=str(lab.run_dir / f"{name}.log"),
        data_root=str(lab.data_dir / name),
        cgroup_parent=f"/pyswarm-lab-{lab.name}-{name}",
    )


def load(name: str) -> Lab:
    """The lab's state, as `up` recorded it."""
    check_name(name)
    try:
        doc = json.loads((RUN_ROOT / name / "state.json").read_text())
    except FileNotFoundError:
        raise LabError(f"no lab named {name} (pyswarm lab up --name {name})") from None
    except (OSError, ValueError) as exc:
        raise LabError(f"unreadable state of lab {name}: {exc}") from None
    return Lab.from_doc(doc)


def _exists(name: str) -> bool:
    paths = (RUN_ROOT / name, DATA_ROOT / name)
    return any(p.exists() for p in paths) or bool(_namespaces_of(name))


def _namespaces_of(name: str) -> list[str]:
    """Namespaces of this lab by their names alone (host names have no '-', so another
    lab's names never match)."""
    pattern = re.compile(rf"pyswarm-lab-{re.escape(name)}-(?:sw|[mw]\d+)")
    try:
        return sorted(ns for ns in os.listdir(NETNS_DIR) if pattern.fullmatch(ns))
    except FileNotFoundError:
        return []


# -- up -----------------------------------------------------------------------------


def up(
    name: str, *, managers: int = 3, workers: int = 2, heartbeat: str = "1s", swarm: bool = True
) -> Lab:
    """Make the lab: switch, hosts, a daemon on each, and (if `swarm`) the swarm.

    Refuses a name in use; on any failure (or Ctrl-C) removes all it made and raises."""
    lab = plan(name, managers=managers, workers=workers, heartbeat=heartbeat)
    if os.geteuid() != 0:
        raise LabError("must run as root")
    if _exists(name):
        raise LabError(f"lab {name} already exists (pyswarm lab down --name {name})")
    RUN_ROOT.mkdir(parents=True, exist_ok=True)
    try:
        lab.run_dir.mkdir()  # the claim on the name: fails if another `up` got there first
    except FileExistsError:
        raise LabError(f"lab {name} already exists (pyswarm lab down --name {name})") from None
    try:
        lab.save()
        _make_network(lab)
        start_daemons(lab)
        if swarm:
            form_swarm(lab)
    except BaseException as exc:
        _undo(name, exc)
        raise
    return lab


def _undo(name: str, exc: BaseException) -> None:
    """Remove a failed lab; a failure to clean is added to the original error."""
    try:
        down(name)
    except LabError as cleanup:
        if isinstance(exc, LabError):
            exc.args = (f"{exc}; and cleaning up: {cleanup}",)


def _make_network(lab: Lab) -> None:
    # pyroute2 and api (grpc) cost ~0.5 s to import: only `up` and `down` need them.
    from api.errors import EngineFailure
    from overlay import netns

    try:
        netns.create_netns(lab.switch)
        netns.in_netns(lab.switch, _add_bridge)
        for host in lab.hosts:
            netns.create_netns(host.netns)
            netns.in_netns(lab.switch, partial(_add_port, host=host))
            netns.in_netns(host.netns, partial(_add_address, host=host))
    except EngineFailure as exc:
        raise LabError(exc.message) from None


def _add_bridge(ipr: Any) -> None:
    ipr.link("add", ifname=BRIDGE, kind="bridge")
    ipr.link("set", index=ipr.link_lookup(ifname=BRIDGE)[0], state="up")


def _add_port(ipr: Any, *, host: Host) -> None:
    """The veth: `eth0` born inside the host's namespace, its peer on the bridge."""
    ipr.link(
        "add",
        ifname=host.name,
        kind="veth",
        peer={"ifname": HOST_IFNAME, "net_ns_fd": host.netns},
    )
    index = ipr.link_lookup(ifname=host.name)[0]
    ipr.link("set", index=index, master=ipr.link_lookup(ifname=BRIDGE)[0])
    ipr.link("set", index=index, state="up")


def _add_address(ipr: Any, *, host: Host) -> None:
    index = ipr.link_lookup(ifname=HOST_IFNAME)[0]
    ipr.addr("add", index=index, address=host.address, prefixlen=NETWORK.prefixlen)
    ipr.link("set", index=index, state="up")


def _pyswarm() -> str:
    beside = Path(sys.executable).parent / "pyswarm"
    return str(beside) if beside.exists() else (shutil.which("pyswarm") or "pyswarm")


def _daemon_argv(host: Host) -> list[str]:
    return [
        "nsenter", f"--net={host.netns_path}", _pyswarm(), "daemon",
        "--data-root", host.data_root, "--host", host.host,
        "--metrics-addr", METRICS_ADDR,  # each host its own netns: one port for all
        "--cgroup-parent", host.cgroup_parent,
        # Never reach for a public registry (DESIGN.md, network safety).
        "--default-registry", "",
        # Every host shares the machine's UTS name: report the lab's name instead.
        "--hostname", host.name,
    ]  # fmt: skip


def start_daemons(lab: Lab) -> None:
    """Start every host's daemon at once, record the pids, and wait for all to answer."""
    for host in lab.hosts:
        _spawn(host)
        lab.save()
    pending = list(lab.hosts)

    def all_answer() -> bool:
        pending[:] = [h for h in pending if not _answers(h)]
        return not pending

    wait_for(all_answer, timeout=START_TIMEOUT, what="the daemons to answer")


def _spawn(host: Host) -> None:
    Path(host.data_root).mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PYSWARM_HOST"}
    with open(host.log, "ab") as log:
        proc = subprocess.Popen(
            _daemon_argv(host),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # outlives `lab up`, and its terminal's Ctrl-C
        )
    _children[proc.pid] = proc
    host.pid = proc.pid  # nsenter execs the daemon: the same pid


def kill(lab: Lab, node: str, *, sig: int = signal.SIGKILL) -> int:
    """Send `sig` to a host's daemon (SIGKILL: a crash) and wait until it is gone."""
    host = lab.host(node)
    pid = _running_daemon(host)
    if pid is None:
        raise LabError(f"the daemon of {node} is not running")
    os.kill(pid, sig)
    wait_for(lambda: not _alive(pid), timeout=STOP_TIMEOUT, what=f"the daemon of {node} to exit")
    proc = _children.pop(pid, None)
    if proc is not None:
        proc.wait()
    return pid


def restart(lab: Lab, node: str) -> None:
    """Start a host's daemon again (after `kill`) and wait until it answers."""
    host = lab.host(node)
    if _running_daemon(host) is not None:
        raise LabError(f"the daemon of {node} is already running")
    _spawn(host)
    lab.save()
    wait_for(lambda: _answers(host), timeout=START_TIMEOUT, what=f"the daemon of {node}")


def _answers(host: Host) -> bool:
    assert host.pid is not None
    if not _alive(host.pid):
        raise LabError(f"the daemon of {host.name} exited: {_last_line(host.log)}")
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(host.sock)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _last_line(path: str) -> str:
    try:
        lines = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1] if lines else "no output"


def wait_for(predicate: Callable[[], T], *, timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll `predicate` until it returns something true; LabError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


# -- the swarm ----------------------------------------------------------------------


def form_swarm(lab: Lab, *, timeout: float = READY_TIMEOUT) -> None:
    """m1 inits the swarm; every other host joins it with its role's token; then wait
    until m1 lists every node Ready. Joins go one at a time: each new manager changes
    the Raft membership, and one change at a time is what Raft allows."""
    first = lab.hosts[0]
    run_cli(
        first, "swarm", "init", "--advertise-addr", first.address,
        "--dispatcher-heartbeat", lab.heartbeat,
    )  # fmt: skip
    tokens = {role: run_cli(first, "swarm", "join-token", "-q", role).strip() for role in Role}
    for host in lab.hosts[1:]:
        run_cli(
            host, "swarm", "join", "--token", tokens[host.role],
            "--advertise-addr", host.address, f"{first.address}:{SWARM_PORT}",
        )  # fmt: skip
    wait_for(
        lambda: _all_ready(lab, first),
        timeout=timeout,
        what=f"all {len(lab.hosts)} nodes to be Ready",
        interval=0.2,
    )


def _all_ready(lab: Lab, first: Host) -> bool:
    out = run_cli(first, "node", "ls", "--format", "json")
    nodes = [json.loads(line) for line in out.splitlines() if line.strip()]
    return len(nodes) == len(lab.hosts) and all(n.get("Status") == "Ready" for n in nodes)


def run_cli(host: Host, *args: str, timeout: float = CLI_TIMEOUT) -> str:
    """`pyswarm ARGS` in the host's namespace against its daemon; its stdout, or
    LabError with the command's own one-line error."""
    argv, env = command_for(host, [_pyswarm(), *args])
    try:
        res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LabError(f"{host.name}: pyswarm {' '.join(args)}: timed out") from None
    if res.returncode != 0:
        why = res.stderr.strip().splitlines()
        raise LabError(f"{host.name}: {why[-1] if why else f'pyswarm {args[0]} failed'}")
    return res.stdout


# -- exec ---------------------------------------------------------------------------


def command_for(host: Host, argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that run `argv` in the host's network namespace with
    PYSWARM_HOST pointing at its daemon."""
    # pyswarm's own bin directory goes last on PATH: `lab exec m1 -- pyswarm ...` then
    # works from a shell without the venv, and nothing found before changes.
    path = [os.environ.get("PATH", os.defpath)]
    if os.path.isabs(pyswarm := _pyswarm()):
        path.append(os.path.dirname(pyswarm))
    env = {**os.environ, "PATH": os.pathsep.join(path), "PYSWARM_HOST": host.host}
    return ["nsenter", f"--net={host.netns_path}", *argv], env


def exec_in(name: str, node: str, argv: list[str]) -> NoReturn:
    """Replace this process with `argv` run in the lab host `node` (stdio and exit code
    are then the command's own)."""
    if not argv:
        raise LabError("no command given")
    command, env = command_for(load(name).host(node), argv)
    try:
        os.execvpe(command[0], command, env)
    except OSError as exc:
        raise LabError(f"cannot run nsenter: {exc.strerror}") from None


# -- down ---------------------------------------------------------------------------


def down(name: str) -> None:
    """Remove everything the lab `name` made; idempotent, and works from a half-made
    lab. Raises LabError naming what could not be removed (then the state stays, and
    `down` can be rerun). In deploy.labdown, imported on call: labdown imports this."""
    from deploy import labdown

    labdown.down(name)


# -- daemon processes -------------------------------------------------------------


def _running_daemon(host: Host) -> int | None:
    """The pid of the daemon serving this host's data root: the recorded one, else one
    found in /proc (a daemon `down` restarted, then was interrupted)."""
    if host.pid is not None and _is_our_daemon(host, host.pid):
        return host.pid
    pids = (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())
    return next((pid for pid in pids if _is_our_daemon(host, pid)), None)


def _is_our_daemon(host: Host, pid: int) -> bool:
    """A running `pyswarm daemon --data-root <the host's>` (not a reuse of the pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    flags = list(pairwise(argv))
    return "daemon" in argv and ("--data-root", host.data_root) in flags and _alive(pid)


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for its parent to reap it."""
    proc = _children.get(pid)
    if proc is not None:
        return proc.poll() is None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")

"""The bridge driver against the real kernel, confined to namespaces the test makes.

Each test makes a fresh network namespace `pyswarm-test-<hex>` that stands in for the
host and runs the driver inside it: this file, run as a script under
`nsenter --net=/run/netns/<ns>`, serves a `BridgeDriver` over JSON lines on stdin and
stdout (so restarting the helper is restarting the daemon). The bridge, veths and the
`pyswarm` table therefore live in the test namespace; containers' namespaces get a
per-test prefix. Traffic runs only between these namespaces and their loopback.
Everything is removed at the end, by name, even when a test fails.

Requires root, nsenter, nft and busybox (nc, netstat).
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.geteuid() != 0 or not all(shutil.which(t) for t in ("nsenter", "busybox", "nft", "ip")),
        reason="needs root, nsenter, busybox, nft and ip",
    ),
]

NETNS_DIR = Path("/run/netns")
CALL_TIMEOUT = 30.0
COMMAND_TIMEOUT = 15.0
READY_TIMEOUT = 5.0
LISTENER_PORT = 8000


# -- the driver, served by this file run as a script in the test namespace ------------


def serve(state_dir: str, prefix: str) -> None:
    """Helper process: one driver, one JSON request per line, one reply per line."""
    from api import engine_pb2, errors
    from overlay.bridge import BridgeDriver

    driver = BridgeDriver(state_dir=Path(state_dir), netns_prefix=prefix, idle_grace=0)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply: dict[str, Any] = {"ok": _handle(driver, request, engine_pb2)}
        except errors.PyswarmError as exc:
            reply = {"error": type(exc).__name__, "message": exc.message}
        print(json.dumps(reply), flush=True)
    driver.close()


def _handle(driver: Any, request: dict[str, Any], engine_pb2: Any) -> Any:
    op = request["op"]
    if op == "attach":
        ports = [
            engine_pb2.PortBinding(host_ip=ip, host_port=hp, container_port=cp, protocol=proto)
            for ip, hp, cp, proto in request["ports"]
        ]
        return _attachment_json(driver.attach(request["id"], mode=request["mode"], ports=ports))
    if op == "attachment":
        found = driver.attachment(request["id"])
        return _attachment_json(found) if found else None
    if op == "detach":
        return driver.detach(request["id"])
    if op == "parallel":  # as the daemon does: calls from several gRPC worker threads
        work = {
            "attach": lambda cid: _attachment_json(driver.attach(cid, mode="bridge", ports=[])),
            "detach": driver.detach,
        }[request["then"]]
        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(work, request["ids"]))
    if op == "restore":
        return driver.restore(request["live"])
    raise ValueError(op)


def _attachment_json(att: Any) -> dict[str, Any]:
    return {
        "netns_path": att.netns_path,
        "ip_address": att.ip_address,
        "gateway": att.gateway,
        "ports": [[p.host_ip, p.host_port, p.container_port, p.protocol] for p in att.ports],
    }


class DriverError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


@dataclass
class Driver:
    """Test side of the helper process."""

    host: Host
    state_dir: Path
    prefix: str
    env: dict[str, str] | None = None
    proc: subprocess.Popen[str] | None = None
    reader: threading.Thread | None = None
    replies: queue.Queue[str] = field(default_factory=queue.Queue)

    def start(self) -> Driver:
        self.proc = subprocess.Popen(
            [
                "nsenter",
                f"--net={self.host.path}",
                sys.executable,
                __file__,
                "serve",
                str(self.state_dir),
                self.prefix,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=self.env,
        )
        self.reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self.reader.start()
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.replies.put(line)

    def stop(self) -> None:
        if self.proc is None:
            return
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=COMMAND_TIMEOUT)
        assert self.reader is not None and self.proc.stdout is not None
        self.reader.join(timeout=COMMAND_TIMEOUT)
        self.proc.stdout.close()
        self.proc = None

    def call(self, op: str, **args: Any) -> Any:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.replies.get(timeout=CALL_TIMEOUT))
        if "error" in reply:
            raise DriverError(reply["error"], reply["message"])
        return reply["ok"]

    def attach(
        self, cid: str, *, mode: str = "bridge", ports: Sequence[tuple[str, int, int, str]] = ()
    ) -> dict[str, Any]:
        result: dict[str, Any] = self.call("attach", id=cid, mode=mode, ports=list(ports))
        return result

    def detach(self, cid: str) -> None:
        self.call("detach", id=cid)

    def restore(self, live: Sequence[str]) -> None:
        self.call("restore", live=list(live))


# -- the stand-in host and what a user would look at ---------------------------------


def run(*cmd: str, netns: str | None = None, check: bool = True, stdin: str | None = None) -> str:
    argv = (["nsenter", f"--net={netns}"] if netns else []) + list(cmd)
    done = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"{argv} failed ({done.returncode}): {done.stderr}")
    return done.stdout


@dataclass
class Host:
    name: str

    @property
    def path(self) -> str:
        return str(NETNS_DIR / self.name)

    def links(self, netns: str | None = None) -> dict[str, dict[str, Any]]:
        out = run("ip", "-j", "-d", "link", "show", netns=netns or self.path)
        return {link["ifname"]: link for link in json.loads(out)}

    def nft_tables(self) -> list[str]:
        out = json.loads(run("nft", "-j", "list", "tables", netns=self.path))
        return [
            f"{t['table']['family']} {t['table']['name']}" for t in out["nftables"] if "table" in t
        ]

    def dnat_owners(self) -> list[str]:
        """The container ids in the comments of the DNAT rules, in rule order."""
        if "ip pyswarm" not in self.nft_tables():
            return []
        out = json.loads(run("nft", "-j", "list", "table", "ip", "pyswarm", netns=self.path))
        rules = [item["rule"] for item in out["nftables"] if "rule" in item]
        return [rule["comment"] for rule in rules if rule["chain"] == "published"]


def namespaces(prefix: str) -> list[str]:
    return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))


def new_id() -> str:
    return secrets.token_hex(32)


@pytest.fixture
def host() -> Iterator[Host]:
    name = f"pyswarm-test-{secrets.token_hex(4)}"
    run("ip", "netns", "add", name)
    try:
        run("ip", "link", "set", "lo", "up", netns=str(NETNS_DIR / name))
        yield Host(name)
    finally:
        subprocess.run(["ip", "netns", "del", name], timeout=COMMAND_TIMEOUT, check=False)


@pytest.fixture
def prefix() -> Iterator[str]:
    prefix = f"pyswarm-t{secrets.token_hex(3)}-"
    yield prefix
    for name in namespaces(prefix):  # whatever a failed test left
        subprocess.run(["ip", "netns", "del", name], timeout=COMMAND_TIMEOUT, check=False)


@pytest.fixture
def driver(host: Host, prefix: str, tmp_path: Path) -> Iterator[Driver]:
    started = Driver(host, tmp_path / "state", prefix).start()
    try:
        yield started
    finally:
        started.stop()


# -- traffic ---------------------------------------------------------------------------


@dataclass
class Listener:
    proc: subprocess.Popen[str]

    def received(self) -> str:
        out, _ = self.proc.communicate(timeout=COMMAND_TIMEOUT)
        return out

    def stop(self) -> None:
        # SIGTERM to `timeout`, which passes it on to nc (a SIGKILL would orphan nc).
        self.proc.terminate()
        self.proc.communicate(timeout=COMMAND_TIMEOUT)


def listen(netns_path: str, *, port: int = LISTENER_PORT) -> Listener:
    """`busybox nc -l` in the namespace, returned once it is listening (polled)."""
    proc = subprocess.Popen(
        ["nsenter", f"--net={netns_path}", "timeout", "10", "busybox", "nc", "-l", "-p", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + READY_TIMEOUT
    while f":{port} " not in run("busybox", "netstat", "-ltn", netns=netns_path):
        if time.monotonic() > deadline or proc.poll() is not None:
            Listener(proc).stop()
            raise AssertionError(f"nothing listening on {port} in {netns_path}")
        time.sleep(0.02)
    return Listener(proc)


def send(netns_path: str, address: str, port: int, message: str) -> None:
    run("timeout", "5", "busybox", "nc", address, str(port), netns=netns_path, stdin=message)


def assert_reaches(*, server: str, client: str, address: str, port: int) -> None:
    """A line sent from `client` to address:port arrives at nc listening in `server`."""
    message = f"hello {secrets.token_hex(4)}\n"
    listener = listen(server)
    try:
        send(client, address, port, message)
        received = listener.received()
    finally:
        if listener.proc.poll() is None:
            listener.stop()
    assert received == message


# -- tests -----------------------------------------------------------------------------


def test_two_containers_on_the_bridge_reach_each_other(host: Host, driver: Driver) -> None:
    a, b = new_id(), new_id()
    att_a = driver.attach(a)
    att_b = driver.attach(b)

    assert att_a["gateway"] == att_b["gateway"] == "172.30.0.1"
    assert {att_a["ip_address"], att_b["ip_address"]} == {"172.30.0.2", "172.30.0.3"}
    inside = host.links(att_a["netns_path"])
    assert sorted(inside) == ["eth0", "lo"]
    assert inside["eth0"]["mtu"] == host.links()["pyswarm0"]["mtu"]
    routes = json.loads(run("ip", "-j", "route", netns=att_a["netns_path"]))
    assert {"dst": "default", "gateway": "172.30.0.1"}.items() <= routes[0].items()
    assert host.links()[f"vps{a[:11]}"]["master"] == "pyswarm0"

    assert_reaches(
        server=att_a["netns_path"],
        client=att_b["netns_path"],
        address=att_a["ip_address"],
        port=LISTENER_PORT,
    )


def test_published_port_answers_on_localhost_and_the_gateway(host: Host, driver: Driver) -> None:
    web, other = new_id(), new_id()
    att = driver.attach(web, ports=[("", 8080, LISTENER_PORT, "tcp")])
    client = driver.attach(other)
    assert att["ports"] == [["", 8080, LISTENER_PORT, "tcp"]]

    for address in ("127.0.0.1", "172.30.0.1"):  # from the host itself
        assert_reaches(server=att["netns_path"], client=host.path, address=address, port=8080)
    # Another container, and the container itself, through the host (hairpin).
    for source in (client["netns_path"], att["netns_path"]):
        assert_reaches(server=att["netns_path"], client=source, address="172.30.0.1", port=8080)


def test_concurrent_attach_and_detach(host: Host, driver: Driver, prefix: str) -> None:
    ids = [new_id() for _ in range(6)]

    attached = driver.call("parallel", then="attach", ids=ids)
    assert len({att["ip_address"] for att in attached}) == len(ids)
    assert namespaces(prefix) == sorted(prefix + cid[:12] for cid in ids)
    assert_reaches(
        server=attached[0]["netns_path"],
        client=attached[-1]["netns_path"],
        address=attached[0]["ip_address"],
        port=LISTENER_PORT,
    )

    driver.call("parallel", then="detach", ids=ids)
    assert namespaces(prefix) == []
    assert sorted(host.links()) == ["lo"]
    assert host.nft_tables() == []


def test_host_port_zero_is_resolved_and_published(host: Host, driver: Driver) -> None:
    att = driver.attach(new_id(), ports=[("127.0.0.1", 0, LISTENER_PORT, "")])

    [[host_ip, host_port, container_port, protocol]] = att["ports"]
    assert (host_ip, container_port, protocol) == ("127.0.0.1", LISTENER_PORT, "tcp")
    assert host_port > 0
    assert_reaches(server=att["netns_path"], client=host.path, address="127.0.0.1", port=host_port)


def test_none_has_only_loopback(host: Host, driver: Driver, prefix: str) -> None:
    cid = new_id()
    att = driver.attach(cid, mode="none")

    assert att == {"netns_path": f"/run/netns/{prefix}{cid[:12]}", "ip_address": "",
                   "gateway": "", "ports": []}  # fmt: skip
    links = host.links(att["netns_path"])
    assert list(links) == ["lo"]
    assert "UP" in links["lo"]["flags"]
    assert "pyswarm0" not in host.links()
    assert host.nft_tables() == []


def test_host_mode_makes_nothing(host: Host, driver: Driver, prefix: str) -> None:
    att = driver.attach(new_id(), mode="host", ports=[("", 8080, 80, "tcp")])

    assert att == {"netns_path": None, "ip_address": "", "gateway": "", "ports": []}
    assert namespaces(prefix) == []
    assert "pyswarm0" not in host.links()


def test_bad_mode_is_invalid(driver: Driver) -> None:
    with pytest.raises(DriverError) as raised:
        driver.attach(new_id(), mode="container:web")
    assert (raised.value.kind, raised.value.message) == (
        "InvalidArgument",
        "network container:web not found",
    )


def test_port_conflict_is_refused_and_leaves_nothing(
    host: Host, driver: Driver, prefix: str
) -> None:
    first, second = new_id(), new_id()
    driver.attach(first, ports=[("", 8080, 80, "tcp")])

    with pytest.raises(DriverError) as raised:
        driver.attach(second, ports=[("", 8081, 81, "tcp"), ("127.0.0.1", 8080, 80, "tcp")])

    assert raised.value.kind == "Conflict"
    assert raised.value.message == "Bind for 127.0.0.1:8080 failed: port is already allocated"
    assert namespaces(prefix) == [prefix + first[:12]]
    assert f"vps{second[:11]}" not in host.links()
    assert host.dnat_owners() == [first]


def test_port_held_by_a_host_socket_is_refused(host: Host, driver: Driver, prefix: str) -> None:
    held = listen(host.path, port=9090)
    try:
        with pytest.raises(DriverError) as raised:
            driver.attach(new_id(), ports=[("", 9090, 80, "tcp")])
    finally:
        held.stop()

    assert raised.value.message == "Bind for 0.0.0.0:9090 failed: port is already allocated"
    assert namespaces(prefix) == []
    assert "pyswarm0" not in host.links()
    assert host.nft_tables() == []


def test_failure_partway_undoes_everything(host: Host, prefix: str, tmp_path: Path) -> None:
    # An nft that refuses everything: attach fails after namespace and veth exist.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nft").write_text("#!/bin/sh\necho 'Error: simulated' >&2\nexit 1\n")
    (fake / "nft").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    failing = Driver(host, tmp_path / "state", prefix, env=env).start()
    try:
        with pytest.raises(DriverError) as raised:
            failing.attach(new_id(), ports=[("", 8080, 80, "tcp")])
    finally:
        failing.stop()

    assert (raised.value.kind, raised.value.message) == (
        "EngineFailure",
        "nft failed: Error: simulated",
    )
    assert namespaces(prefix) == []
    assert sorted(host.links()) == ["lo"]


def test_detach_removes_everything_and_last_one_removes_bridge_and_table(
    host: Host, driver: Driver, prefix: str, tmp_path: Path
) -> None:
    a, b = new_id(), new_id()
    driver.attach(a, ports=[("", 8080, 80, "tcp")])
    driver.attach(b, ports=[("", 8081, 80, "udp")])
    assert sorted(host.dnat_owners()) == sorted([a, b])

    driver.detach(a)
    assert namespaces(prefix) == [prefix + b[:12]]
    assert f"vps{a[:11]}" not in host.links()
    assert host.dnat_owners() == [b]
    driver.detach(a)  # idempotent

    driver.detach(b)
    assert namespaces(prefix) == []
    assert sorted(host.links()) == ["lo"]
    assert host.nft_tables() == []
    state = json.loads((tmp_path / "state" / "bridge.json").read_text())
    assert state["endpoints"] == {}


def test_restore_keeps_live_and_removes_the_rest(host: Host, driver: Driver, prefix: str) -> None:
    live, dead, quiet = new_id(), new_id(), new_id()
    att = driver.attach(live, ports=[("", 8080, LISTENER_PORT, "tcp")])
    driver.attach(dead, ports=[("", 8081, LISTENER_PORT, "tcp")])
    driver.attach(quiet, mode="none")
    # Leftovers of a daemon that died mid-attach: never recorded in the state file.
    stray = secrets.token_hex(6)
    run("ip", "netns", "add", prefix + stray)
    run("ip", "link", "add", f"vps{stray[:11]}", "type", "veth", "peer", "name", "vpstmp",
        netns=host.path)  # fmt: skip

    driver.stop()  # the daemon goes away; containers keep running
    driver.start()
    driver.restore([live])

    assert namespaces(prefix) == [prefix + live[:12]]
    assert sorted(host.links()) == ["lo", "pyswarm0", f"vps{live[:11]}"]
    assert host.dnat_owners() == [live]
    assert driver.call("attachment", id=live) == att
    assert_reaches(server=att["netns_path"], client=host.path, address="127.0.0.1", port=8080)
    # The adopted container's address stays taken.
    assert driver.attach(new_id())["ip_address"] not in (att["ip_address"], "")


if __name__ == "__main__":
    serve(sys.argv[2], sys.argv[3])

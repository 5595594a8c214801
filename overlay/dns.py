"""The embedded DNS server: 127.0.0.11:53 inside every swarm task's network namespace.

Like Docker's embedded resolver, each task on an overlay network gets a DNS server at
127.0.0.11 (UDP and TCP port 53) in its own namespace, and its resolv.conf points there
(`resolv_conf`). Names of the swarm (`<service>`, `tasks.<service>`, ...) are answered
from the daemon's own state through the `lookup(key, name)` callback, per registered
container `key`, so two tasks on different networks see different answers; every other
name is forwarded to the daemon's upstream resolvers.

Sockets and threads. A socket stays in the network namespace it was created in, so
`serve` opens the two listening sockets from a short-lived thread that entered the
task's namespace (`netns._in_thread` / `netns._enter`) and hands them to ONE long-lived
serving thread, which multiplexes every namespace's sockets with a selector: thousands
of tasks cost file descriptors, not threads. Accepted TCP connections belong to their
listener's namespace. Forwarding sockets are made by the serving thread itself, so they
live in the namespace of the thread that constructed `EmbeddedDns` (the daemon's),
never in a task's: upstreams are reached the way the daemon reaches them, and a task's
own loopback is never an upstream. Forwarding is non-blocking (one connected UDP socket
per query in flight, in the same selector loop, with a deadline), so a slow upstream
never holds up answers for swarm names.

Answers (`answer`, a pure function over bytes, is the whole policy):

* A for a swarm name: NOERROR, one A record per address, in the order given, `ttl` as
  configured (0 by default: the data changes as tasks come and go, and there is no
  cache here either; each query calls `lookup`).
* AAAA or any other type for a swarm name: NOERROR with no answers (NODATA), never
  forwarded, as Docker does for a name it knows only an IPv4 address of.
* A swarm name with no address (a service without a healthy task): NOERROR, no answers.
  Docker forwards such a query to the outside instead (which mostly answers NXDOMAIN).
  Here the swarm owns its names: an outside resolver must not answer for `web` with some
  unrelated host found through a search domain, nor learn internal service names; and
  NODATA (the name exists) rather than NXDOMAIN keeps caching stubs from remembering the
  name as nonexistent once tasks come back (no SOA is sent, so nothing caches it).
* Other names: forwarded over UDP to the upstreams in order (each gets an equal share of
  `forward_timeout`; a send error moves on to the next one immediately), with a fresh
  random query id, and the reply relayed with the client's id. No upstream, every
  upstream failing (ENETUNREACH, ECONNREFUSED, ...) or no reply in time: SERVFAIL, at
  once when the failures are immediate (an offline host answers in microseconds).
* A `lookup` that raises is logged and answered SERVFAIL; opcodes other than QUERY get
  NOTIMP; a query without exactly one question gets FORMERR; undecodable packets and
  responses are dropped (UDP) or close the connection (TCP).
* UDP answers larger than the client's limit (512 bytes, or its EDNS payload size) are
  sent truncated (TC) so that the client retries over TCP.

TCP carries the 2-byte length prefix, any number of queries per connection and partial
reads and writes; connections idle for `tcp_idle_timeout` seconds are closed, and a
listener keeps at most `MAX_TCP_PER_KEY` connections.

A listening socket holds its namespace alive: the engine calls `stop_serving` when the
task's namespace goes away (a bind into a namespace by path does not notice its removal).

`lookup` runs on the serving thread, under the server's lock: it must answer from
memory and not call back into the server.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import secrets
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_address
from pathlib import Path
from typing import Any

from dnslib import EDNS0, QTYPE, RCODE, RR, A, DNSError, DNSHeader, DNSRecord
from pyroute2.netlink.exceptions import NetlinkError

from api import errors
from overlay import netns as _netns

log = logging.getLogger(__name__)

Lookup = Callable[[str, str], Sequence[IPv4Address] | None]

DNS_ADDRESS = "127.0.0.11"
DNS_PORT = 53
RESOLV_CONF = Path("/etc/resolv.conf")
SYSTEMD_RESOLV_CONF = Path("/run/systemd/resolve/resolv.conf")
MAX_UDP_PLAIN = 512  # a client without EDNS
MAX_UDP_EDNS = 4096  # our own cap on an EDNS client's advertised size
MAX_TCP_PER_KEY = 64
MAX_FORWARDS = 1024  # queries in flight upstream, all keys together
MAX_TCP_BUFFER = 4 * 65537  # unsent replies per connection before it is dropped
UDP_BATCH = 64  # datagrams read per readiness event
_LOOPBACK = IPv4Network("127.0.0.0/8")
_IFF_UP = 0x1
CLASS_IN, CLASS_ANY = 1, 255


# -- the answer policy (pure) ---------------------------------------------------------


@dataclass(frozen=True)
class Forward:
    """`answer`'s verdict for a name that is not the swarm's: send it upstream."""

    qname: str


def _reply_header(request: DNSRecord, rcode: int) -> DNSHeader:
    return DNSHeader(
        id=request.header.id,
        qr=1,
        opcode=request.header.opcode,
        rd=request.header.rd,
        ra=1,
        rcode=rcode,
    )


def _error_reply(request: DNSRecord, rcode: int) -> bytes:
    reply = DNSRecord(_reply_header(request, rcode), questions=list(request.questions[:1]))
    packed = bytes(reply.pack())
    return packed


def _client_limit(request: DNSRecord) -> int:
    for rr in request.ar:
        if rr.rtype == QTYPE.OPT:
            return max(MAX_UDP_PLAIN, min(int(rr.rclass), MAX_UDP_EDNS))
    return MAX_UDP_PLAIN


def answer(
    packet: bytes,
    lookup: Callable[[str], Sequence[IPv4Address] | None],
    *,
    ttl: int = 0,
    max_size: int | None = None,
) -> bytes | Forward | None:
    """The reply to one DNS message, `Forward` to send it upstream, or None to drop it.

    `lookup(name)` is the registered container's view of the swarm (see `Lookup`);
    `max_size` is the transport's limit (None: UDP, 512 bytes or the client's EDNS size;
    TCP passes 65535). Never raises."""
    try:
        request = DNSRecord.parse(packet)
    except (DNSError, ValueError, IndexError, struct.error, UnicodeError):
        return None
    except Exception:  # dnslib reports some malformations as other exceptions
        log.debug("undecodable DNS message", exc_info=True)
        return None
    if request.header.qr:
        return None  # a response: never answer one (reflection loops)
    if request.header.opcode != 0:
        return _error_reply(request, RCODE.NOTIMP)
    if len(request.questions) != 1:
        return _error_reply(request, RCODE.FORMERR)
    question = request.q
    name = str(question.qname).rstrip(".").lower()
    if question.qclass not in (CLASS_IN, CLASS_ANY):
        return Forward(name)
    try:
        addresses = lookup(name)
    except Exception:
        log.exception("DNS lookup of %r failed", name)
        return _error_reply(request, RCODE.SERVFAIL)
    if addresses is None:
        return Forward(name)
    reply = DNSRecord(_reply_header(request, RCODE.NOERROR), q=question)
    reply.header.aa = 1
    if question.qtype == QTYPE.A:
        for address in addresses:
            reply.add_answer(RR(question.qname, QTYPE.A, rdata=A(str(address)), ttl=ttl))
    limit = _client_limit(request) if max_size is None else max_size
    edns = any(rr.rtype == QTYPE.OPT for rr in request.ar)
    if edns:
        reply.add_ar(EDNS0(udp_len=MAX_UDP_EDNS))
    packed = bytes(reply.pack())
    if len(packed) > limit:
        truncated = DNSRecord(reply.header, q=question)
        truncated.header.tc = 1
        packed = bytes(truncated.pack())
    return packed


def servfail(packet: bytes) -> bytes | None:
    """SERVFAIL for a query that parsed once (None if it no longer does)."""
    try:
        return _error_reply(DNSRecord.parse(packet), RCODE.SERVFAIL)
    except Exception:
        return None


# -- configuration ----------------------------------------------------------------------


def resolv_conf(search: Sequence[str] = (), options: Sequence[str] = ()) -> str:
    """The resolv.conf of a task served by the embedded DNS server.

    `options ndots:0` (as Docker writes: a bare service name is tried as is first)
    unless the given options set ndots themselves."""
    for item in (*search, *options):
        if not item or any(c.isspace() for c in item):
            raise errors.InvalidArgument(f"invalid resolv.conf entry {item!r}")
    lines = [f"nameserver {DNS_ADDRESS}"]
    if search:
        lines.append("search " + " ".join(search))
    opts = list(options)
    if not any(o.startswith("ndots:") for o in opts):
        opts.insert(0, "ndots:0")
    lines.append("options " + " ".join(opts))
    return "\n".join(lines) + "\n"


def parse_upstream(text: str) -> tuple[str, int]:
    """`ip`, `ipv4:port` or `[ipv6]:port` → (address, port)."""
    text = text.strip()
    try:
        return str(ip_address(text)), DNS_PORT
    except ValueError:
        pass
    if text.startswith("[") and "]:" in text:
        host, _, port_text = text[1:].partition("]:")
    else:
        host, _, port_text = text.rpartition(":")
    try:
        port = int(port_text)
        host = str(ip_address(host))
    except ValueError:
        raise errors.InvalidArgument(f"invalid DNS upstream {text!r}") from None
    if not 0 < port < 65536:
        raise errors.InvalidArgument(f"invalid DNS upstream port in {text!r}")
    return host, port


def read_upstreams(
    path: Path = RESOLV_CONF, *, fallback: Path | None = SYSTEMD_RESOLV_CONF
) -> list[tuple[str, int]]:
    """The nameservers of a resolv.conf, minus 127.0.0.0/8 (and ::1), as Docker does.

    When that leaves none and `fallback` exists (systemd-resolved's list of the real
    upstreams, behind its 127.0.0.53 stub), its nameservers are used, as Docker does."""
    found = _nameservers(path)
    if not found and fallback is not None:
        found = _nameservers(fallback)
    return found


def _nameservers(path: Path) -> list[tuple[str, int]]:
    try:
        text = path.read_text()
    except OSError:
        return []
    found: list[tuple[str, int]] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 2 or fields[0] != "nameserver":
            continue
        try:
            address = ip_address(fields[1].split("%")[0])
        except ValueError:
            continue
        if (isinstance(address, IPv4Address) and address in _LOOPBACK) or (
            isinstance(address, IPv6Address) and address.is_loopback
        ):
            continue
        found.append((str(address), DNS_PORT))
    return found


# -- the server -------------------------------------------------------------------------


class _Handler:
    def on_event(self, server: EmbeddedDns, mask: int) -> None:
        raise NotImplementedError


@dataclass(eq=False)
class _Served:
    """One key's listeners: UDP and TCP 127.0.0.11:53 in its namespace."""

    key: str
    netns: str
    udp: socket.socket
    tcp: socket.socket
    conns: set[_TcpConn] = field(default_factory=set)


@dataclass(eq=False)
class _UdpListener(_Handler):
    served: _Served

    def on_event(self, server: EmbeddedDns, mask: int) -> None:
        sock = self.served.udp
        for _ in range(UDP_BATCH):
            try:
                packet, client = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                log.debug("recvfrom on DNS socket of %s", self.served.key, exc_info=True)
                return
            server._handle_query(self.served, packet, self._replier(client), None)

    def _replier(self, client: Any) -> Callable[[bytes], None]:
        sock = self.served.udp

        def send(reply: bytes) -> None:
            with contextlib.suppress(OSError):  # full buffer or closed: UDP may drop
                sock.sendto(reply, client)

        return send


@dataclass(eq=False)
class _TcpListener(_Handler):
    served: _Served

    def on_event(self, server: EmbeddedDns, mask: int) -> None:
        try:
            conn, _ = self.served.tcp.accept()
        except OSError:
            return
        if len(self.served.conns) >= MAX_TCP_PER_KEY:
            conn.close()
            return
        conn.setblocking(False)
        handler = _TcpConn(self.served, conn, server, last_active=time.monotonic())
        self.served.conns.add(handler)
        server._sel.register(conn, selectors.EVENT_READ, handler)


@dataclass(eq=False)
class _TcpConn(_Handler):
    served: _Served
    sock: socket.socket
    server: EmbeddedDns
    last_active: float
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    closed: bool = False

    def on_event(self, server: EmbeddedDns, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self.flush(server)
        if mask & selectors.EVENT_READ and not self.closed:
            self._read(server)

    def _read(self, server: EmbeddedDns) -> None:
        try:
            data = self.sock.recv(65537)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            server._close_conn(self)
            return
        if not data:
            server._close_conn(self)
            return
        self.last_active = time.monotonic()
        self.inbuf += data
        while len(self.inbuf) >= 2 and not self.closed:
            size = int.from_bytes(self.inbuf[:2], "big")
            if size == 0:
                server._close_conn(self)
                return
            if len(self.inbuf) < 2 + size:
                return
            packet = bytes(self.inbuf[2 : 2 + size])
            del self.inbuf[: 2 + size]
            server._handle_query(self.served, packet, self.send, self)

    def send(self, reply: bytes) -> None:
        if self.closed:
            return
        self.outbuf += len(reply).to_bytes(2, "big") + reply
        if len(self.outbuf) > MAX_TCP_BUFFER:  # a client that does not read
            self.server._close_conn(self)
            return
        self.flush(self.server)

    def flush(self, server: EmbeddedDns) -> None:
        if self.closed:
            return
        try:
            while self.outbuf:
                sent = self.sock.send(self.outbuf)
                del self.outbuf[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            server._close_conn(self)
            return
        self.last_active = time.monotonic()
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.outbuf else 0)
        with contextlib.suppress(KeyError, ValueError):
            if server._sel.get_key(self.sock).events != events:
                server._sel.modify(self.sock, events, self)


@dataclass(eq=False)
class _Pending(_Handler):
    """A query in flight upstream."""

    query: bytes  # the client's message, its id replaced by `upstream_id`
    client_id: bytes
    upstream_id: bytes
    reply: Callable[[bytes], None]
    conn: _TcpConn | None
    deadline: float
    next_upstream: int = 0
    attempt_deadline: float = 0.0
    sock: socket.socket | None = None
    done: bool = False

    def on_event(self, server: EmbeddedDns, mask: int) -> None:
        assert self.sock is not None
        for _ in range(8):  # stray datagrams with the wrong id are skipped
            try:
                data = self.sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP unreachable came back: next upstream now
                server._forward_next(self)
                return
            if len(data) >= 12 and data[:2] == self.upstream_id and data[2] & 0x80:
                server._finish(self, self.client_id + data[2:])
                return


class EmbeddedDns:
    """The DNS server at 127.0.0.11:53 of registered namespaces (see module docstring)."""

    def __init__(
        self,
        lookup: Lookup,
        *,
        upstreams: Sequence[str] | None = None,
        forward_timeout: float = 2.0,
        ttl: int = 0,
        tcp_idle_timeout: float = 5.0,
    ) -> None:
        self._lookup = lookup
        self._upstreams = (
            read_upstreams() if upstreams is None else [parse_upstream(u) for u in upstreams]
        )
        self._forward_timeout = forward_timeout
        self._ttl = ttl
        self._tcp_idle_timeout = tcp_idle_timeout
        self._lock = threading.Lock()
        self._served: dict[str, _Served] = {}
        self._pending: set[_Pending] = set()
        self._timers: list[tuple[float, int, _Pending]] = []
        self._seq = itertools.count()
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._stopping = False
        self._closed = False
        # Started by the constructing thread, so it shares that thread's namespace: the
        # forwarding sockets it makes are the daemon's.
        self._thread = threading.Thread(target=self._run, name="embedded-dns", daemon=True)
        self._thread.start()

    @property
    def upstreams(self) -> list[tuple[str, int]]:
        return list(self._upstreams)

    # -- registration -------------------------------------------------------------------

    def serve(self, key: str, netns: str) -> None:
        """Serve 127.0.0.11:53 (UDP, TCP) inside /run/netns/<netns> for `key`.

        Idempotent per key (a key served in another namespace moves there). Brings lo
        up in the namespace if it is down. Raises EngineFailure if the namespace cannot
        be entered or the port bound; then nothing of this call is left open."""
        with self._lock:
            if self._closed:
                raise errors.EngineFailure("the embedded DNS server is closed")
            current = self._served.get(key)
            if current is not None and current.netns == netns:
                return
        with _netns._kernel_errors(f"serving DNS at {DNS_ADDRESS}:{DNS_PORT} in {netns}"):
            udp, tcp = _netns._in_thread(lambda: _open_listeners(netns))
        with self._lock:
            if self._closed:
                udp.close()
                tcp.close()
                raise errors.EngineFailure("the embedded DNS server is closed")
            old = self._served.pop(key, None)
            if old is not None:
                self._unserve(old)
            served = _Served(key, netns, udp, tcp)
            self._sel.register(udp, selectors.EVENT_READ, _UdpListener(served))
            self._sel.register(tcp, selectors.EVENT_READ, _TcpListener(served))
            self._served[key] = served

    def stop_serving(self, key: str) -> None:
        """Close the key's sockets and connections; idempotent."""
        with self._lock:
            served = self._served.pop(key, None)
            if served is not None:
                self._unserve(served)

    def keys(self) -> list[str]:
        with self._lock:
            return sorted(self._served)

    def close(self) -> None:
        """Stop the serving thread and close every socket; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)
        with self._lock:
            for served in list(self._served.values()):
                self._unserve(served)
            self._served.clear()
            for pending in list(self._pending):
                self._drop_pending(pending)
            self._timers.clear()
            self._sel.close()
            self._wake_r.close()
            self._wake_w.close()

    # -- the serving thread -------------------------------------------------------------

    def _run(self) -> None:
        next_sweep = time.monotonic() + 1.0
        while not self._stopping:
            timeout = 1.0
            if self._timers:
                timeout = min(timeout, max(0.0, self._timers[0][0] - time.monotonic()))
            try:
                events = self._sel.select(timeout)
            except (OSError, ValueError):  # closed under us
                if self._stopping:
                    return
                raise
            with self._lock:
                if self._stopping:
                    return
                for sel_key, mask in events:
                    handler = sel_key.data
                    if handler is None:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(64)
                        continue
                    # An event may be stale: its socket unregistered since select().
                    current = self._sel.get_map().get(sel_key.fd)
                    if current is None or current.data is not handler:
                        continue
                    try:
                        handler.on_event(self, mask)
                    except Exception:
                        log.exception("embedded DNS: handling an event failed")
                now = time.monotonic()
                self._expire(now)
                if now >= next_sweep:
                    next_sweep = now + 1.0
                    self._sweep_idle(now)

    def _handle_query(
        self,
        served: _Served,
        packet: bytes,
        reply: Callable[[bytes], None],
        conn: _TcpConn | None,
    ) -> None:
        key = served.key
        verdict = answer(
            packet,
            lambda name: self._lookup(key, name),
            ttl=self._ttl,
            max_size=None if conn is None else 65535,
        )
        if verdict is None:
            if conn is not None:
                self._close_conn(conn)
            return
        if isinstance(verdict, Forward):
            self._forward(packet, reply, conn)
            return
        reply(verdict)

    # -- forwarding -----------------------------------------------------------------

    def _forward(
        self, packet: bytes, reply: Callable[[bytes], None], conn: _TcpConn | None
    ) -> None:
        if not self._upstreams or len(self._pending) >= MAX_FORWARDS:
            failed = servfail(packet)
            if failed is not None:
                reply(failed)
            return
        upstream_id = secrets.token_bytes(2)
        pending = _Pending(
            query=upstream_id + packet[2:],
            client_id=packet[:2],
            upstream_id=upstream_id,
            reply=reply,
            conn=conn,
            deadline=time.monotonic() + self._forward_timeout,
        )
        self._pending.add(pending)
        self._forward_next(pending)

    def _forward_next(self, pending: _Pending) -> None:
        """Send to the next upstream; SERVFAIL when there is none left."""
        self._close_pending_sock(pending)
        share = self._forward_timeout / len(self._upstreams)
        while pending.next_upstream < len(self._upstreams):
            host, port = self._upstreams[pending.next_upstream]
            pending.next_upstream += 1
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.connect((host, port))
                sock.send(pending.query)
            except OSError as exc:
                log.debug("DNS upstream %s:%d: %s", host, port, exc)
                sock.close()
                continue
            pending.sock = sock
            now = time.monotonic()
            pending.attempt_deadline = min(pending.deadline, now + share)
            self._sel.register(sock, selectors.EVENT_READ, pending)
            heapq.heappush(self._timers, (pending.attempt_deadline, next(self._seq), pending))
            return
        self._finish(pending, servfail(pending.client_id + pending.query[2:]))

    def _finish(self, pending: _Pending, reply: bytes | None) -> None:
        self._drop_pending(pending)
        if reply is not None and (pending.conn is None or not pending.conn.closed):
            pending.reply(reply)

    def _drop_pending(self, pending: _Pending) -> None:
        pending.done = True
        self._pending.discard(pending)
        self._close_pending_sock(pending)

    def _close_pending_sock(self, pending: _Pending) -> None:
        if pending.sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(pending.sock)
            pending.sock.close()
            pending.sock = None

    def _expire(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            deadline, _, pending = heapq.heappop(self._timers)
            if pending.done or deadline != pending.attempt_deadline:
                continue  # answered, or an earlier attempt's timer
            if now >= pending.deadline:
                pending.next_upstream = len(self._upstreams)
            self._forward_next(pending)

    # -- TCP and teardown -------------------------------------------------------------

    def _sweep_idle(self, now: float) -> None:
        for served in self._served.values():
            for conn in list(served.conns):
                if now - conn.last_active > self._tcp_idle_timeout:
                    self._close_conn(conn)

    def _close_conn(self, conn: _TcpConn) -> None:
        if conn.closed:
            return
        conn.closed = True
        conn.served.conns.discard(conn)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(conn.sock)
        conn.sock.close()

    def _unserve(self, served: _Served) -> None:
        for conn in list(served.conns):
            self._close_conn(conn)
        for sock in (served.udp, served.tcp):
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(sock)
            sock.close()


def _open_listeners(netns: str) -> tuple[socket.socket, socket.socket]:
    """In a fresh thread: enter the namespace, bring lo up, bind UDP and TCP."""
    _netns._enter(netns)
    try:
        with _netns._iproute() as ipr:
            lo = ipr.link("get", ifname="lo")[0]
            if not lo["flags"] & _IFF_UP:
                ipr.link("set", index=lo["index"], state="up")
    except NetlinkError as exc:
        raise OSError(exc.code, f"bringing up lo: {os.strerror(exc.code)}") from exc
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        udp.bind((DNS_ADDRESS, DNS_PORT))
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((DNS_ADDRESS, DNS_PORT))
        tcp.listen(64)
        udp.setblocking(False)
        tcp.setblocking(False)
    except OSError:
        udp.close()
        tcp.close()
        raise
    return udp, tcp

"""Consensus for the manager: a narrow interface over pysyncobj.

Callers never see pysyncobj. They hand opaque ``bytes`` to :meth:`RaftNode.propose`;
every member calls ``machine.apply(data)`` with the same entries in the same order,
from one thread (the raft driver thread), and the proposer gets apply's result back.
This module is the node and its public API; the pysyncobj adapter is
:mod:`manager.raftengine` and the files in the data dir are :mod:`manager.raftdisk`.

Invariants and design:

- **One driver thread per node** runs pysyncobj (``autoTick=False``; we call
  ``doTick``) and, after every tick, publishes a frozen :class:`RaftStatus`. All of
  pysyncobj's state is touched from that thread only; other threads read the
  published status and enqueue commands (pysyncobj's queue is locked). A pipe wakes
  the driver as soon as a proposal is queued. pysyncobj's own autoTick thread is not
  used: it stops when the thread that built it exits.
- **Nothing pickled reaches the disk dump.** Log compaction writes our own file
  (:mod:`manager.raftdisk`): two boundary log entries, the member list, and
  ``machine.snapshot()`` bytes; loading it calls ``machine.restore``. Network input
  is still pickle inside pysyncobj, so a cluster ``password`` is mandatory (Fernet:
  messages from anyone without it are dropped before unpickling).
- **Leader-only writes.** ``propose``/``barrier``/membership changes run on the leader
  with a connected quorum; a follower raises :class:`NotLeader` carrying the leader's
  address at once (callers forward), and with no usable leader the call waits up to
  its timeout for one, then raises :class:`NoLeader`.
- **Membership** is persisted in ``members.json`` whenever it changes, and on restart
  that file wins over the ``peers`` argument (which only seeds a brand-new data dir).

Joining a manager (verified by the tests)::

    new = RaftNode(self_addr=new_addr, peers=current_members, join=True, ...)
    new.start()                                  # 1. passive: never campaigns
    leader.add_member(new_addr, timeout=10)      # 2. on the leader; commits once the
                                                 #    new member's quorum acks it

``join=True`` keeps the new node from starting elections until a leader has contacted
it (pysyncobj has no pre-vote; an uninvited candidate would bump terms and depose the
leader). Starting it first matters for 1 -> 2: the change then needs both nodes.

Usage::

    node = RaftNode(self_addr="10.0.0.1:4377", peers=[], password=secret,
                    data_dir=path, machine=store)
    node.start()
    result = node.propose(batch, timeout=5.0)
    node.close()
"""

from __future__ import annotations

import _socket
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pysyncobj.config import FAIL_REASON
from pysyncobj.syncobj import _COMMAND_TYPE

from manager import raftdisk
from manager.raftengine import ApplyFailed, Engine, Waker, make_conf

# pysyncobj.win_inet_pton replaces socket.inet_ntop with a Windows-only stub on every
# OS; pyroute2 (imported by name after this) would then fail to decode addresses.
# (The imports above load only pysyncobj and its adapters, never pyroute2.)
socket.inet_ntop = _socket.inet_ntop

log = logging.getLogger(__name__)

_PING_PERIOD = 0.25  # keeps idle follower<->follower links under connectionTimeout


class RaftError(Exception):
    """Base of all consensus errors; the message is one clear line."""


class NoLeader(RaftError):
    """Quorum lost or an election is in progress."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the swarm does not have a leader: {reason}")


class NotLeader(RaftError):
    """This node is a follower; ``leader`` is where to forward, if known."""

    def __init__(self, leader: str | None, detail: str = "") -> None:
        where = f"the leader is {leader}" if leader else "the leader is unknown"
        super().__init__(f"this manager is not the leader ({where}){detail}")
        self.leader = leader


class ProposalTimeout(RaftError):
    """The outcome is unknown: the entry may or may not be committed later."""


@dataclass(frozen=True)
class RaftStatus:
    self_addr: str
    leader: str | None
    is_leader: bool
    term: int
    commit_index: int
    applied_index: int
    members: tuple[str, ...]
    reachable: dict[str, bool]
    has_quorum: bool


class StateMachine(Protocol):
    def apply(self, data: bytes) -> bytes: ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...


Callback = Callable[[bytes | None, RaftError | None], None]


@dataclass(frozen=True)
class Timing:
    """pysyncobj periods, in seconds. Defaults give ~1 s failover on a LAN.

    ``append_period`` is both the heartbeat and the batching window: proposals queued
    on the leader ride the next append_entries (``appendEntriesUseBatch``), so it is
    the main term in propose latency; pysyncobj needs it < election_timeout[0] / 3.
    """

    election_timeout: tuple[float, float] = (0.5, 1.0)
    append_period: float = 0.02
    tick: float = 0.01
    connection_timeout: float = 2.0
    reconnect: float = 0.1
    compaction_min_entries: int = 5000
    compaction_min_time: float = 300.0


# -- pending proposals ----------------------------------------------------------------


class _Denied(RaftError):
    """pysyncobj refused a membership change (another one or the leader's no-op is
    still uncommitted, or the change is a no-op)."""


class _Pending:
    """One proposal's callback, fired exactly once whoever finishes first."""

    def __init__(self, callback: Callback, deadline: float | None) -> None:
        self.callback = callback
        self.deadline = deadline
        self._lock = threading.Lock()
        self._done = False

    def finish(self, result: bytes | None, error: RaftError | None) -> bool:
        with self._lock:
            if self._done:
                return False
            self._done = True
        try:
            self.callback(result, error)
        except Exception:
            log.exception("raft proposal callback failed")
        return True


def _translate(result: Any, reason: int, leader: str | None) -> RaftError | None:
    if reason == FAIL_REASON.SUCCESS:
        if isinstance(result, ApplyFailed):
            return RaftError(f"the state machine failed to apply the entry: {result.error}")
        return None
    if reason == FAIL_REASON.MISSING_LEADER:
        return NoLeader("leader lost before the proposal was appended")
    if reason in (FAIL_REASON.DISCARDED, FAIL_REASON.NOT_LEADER):
        return NotLeader(leader, "; leadership changed and the proposal was not applied")
    if reason == FAIL_REASON.QUEUE_FULL:
        return RaftError("the raft proposal queue is full")
    if reason == FAIL_REASON.REQUEST_DENIED:
        return _Denied("the raft request was denied")
    return ProposalTimeout("leadership changed while the proposal was in flight; outcome unknown")


# -- the node -------------------------------------------------------------------------


class RaftNode:
    def __init__(
        self,
        *,
        self_addr: str,
        peers: Sequence[str],
        password: str,
        data_dir: Path,
        machine: StateMachine,
        on_leader_change: Callable[[str | None], None] | None = None,
        timing: Timing = Timing(),
        join: bool = False,
    ) -> None:
        if not password:
            raise RaftError("a cluster password is required (pysyncobj unpickles network input)")
        self._addr = self_addr
        self._password = password
        self._dir = Path(data_dir)
        self._machine = machine
        self._on_leader_change = on_leader_change
        self._timing = timing
        self._passive = join
        stored = raftdisk.load_members(self._dir)
        members = stored if stored is not None else [self_addr, *peers]
        self._peers = sorted({m for m in members if m != self_addr})
        self._engine: Any = None
        self._waker: Waker | None = None
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._status = RaftStatus(self_addr, None, False, 0, 0, 0, (self_addr,), {}, False)
        self._pending: set[_Pending] = set()
        self._pending_lock = threading.Lock()
        self._events: queue.SimpleQueue[tuple[str | None] | None] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._last_ping = 0.0
        self._saved_members: tuple[str, ...] = ()

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Bind, load dump + journal, and start the driver and notifier threads."""
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self._dir, 0o700)
        conf = make_conf(
            self._timing, self._password, self._dir, self._serialize, self._deserialize
        )
        try:
            self._engine = Engine(self._addr, self._peers, conf, self._machine, self._passive)
        except Exception as e:
            raise RaftError(f"cannot start raft on {self._addr}: {e!r}") from e
        self._waker = Waker(self._engine._poller)
        for name, target in (("driver", self._drive), ("events", self._deliver_events)):
            t = threading.Thread(target=target, name=f"raft-{name}-{self._addr}", daemon=True)
            t.start()
            self._threads.append(t)

    def close(self) -> None:
        """Stop threads, close sockets and files, fail pending proposals. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        self._wake()
        self._events.put(None)
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=5)
        with self._pending_lock:
            pending, self._pending = self._pending, set()
        for p in pending:
            p.finish(None, RaftError("the raft node was closed"))
        with self._cond:
            self._cond.notify_all()

    # -- driver thread -------------------------------------------------------------

    def _drive(self) -> None:
        engine = self._engine
        try:
            while not self._stopping.is_set():
                try:
                    engine.doTick(self._timing.tick)
                    self._after_tick()
                except Exception:
                    log.exception("raft tick failed")
                    time.sleep(self._timing.tick)
        finally:
            engine._doDestroy()
            if self._waker is not None:
                self._waker.close()

    def _after_tick(self) -> None:
        engine = self._engine
        others = sorted(engine.otherNodes, key=lambda n: n.id)
        reachable = {n.id: bool(engine.isNodeConnected(n)) for n in others}
        is_leader = bool(engine._isLeader())
        leader_node = engine._getLeader()
        leader = None
        if is_leader:
            leader = self._addr
        elif leader_node is not None and reachable.get(leader_node.id):
            leader = leader_node.id  # a disconnected leader is as good as none
        if engine.passive and leader is not None:
            engine.passive = False  # a leader has contacted us: campaign normally from now
        while not self._calls.empty():
            self._calls.get_nowait()()
        members = tuple(sorted([self._addr, *reachable]))
        status = RaftStatus(
            self_addr=self._addr,
            leader=leader,
            is_leader=is_leader,
            term=engine.raftCurrentTerm,
            commit_index=engine.raftCommitIndex,
            applied_index=engine.raftLastApplied,
            members=members,
            reachable=reachable,
            has_quorum=bool(engine.hasQuorum),
        )
        old = self._status
        self._status = status
        if (old.leader, old.is_leader, old.has_quorum) != (leader, is_leader, status.has_quorum):
            with self._cond:
                self._cond.notify_all()
        if old.leader != leader:
            self._events.put((leader,))
        if members != self._saved_members:
            self._saved_members = members
            raftdisk.save_members(self._dir, members)
        self._housekeeping(engine, others)

    def _housekeeping(self, engine: Any, others: list[Any]) -> None:
        now = time.monotonic()
        if now - self._last_ping < _PING_PERIOD:
            return
        self._last_ping = now
        transport = engine.pyswarm_transport
        for node in others:  # unknown message types are ignored by pysyncobj
            transport.send(node, {"type": "pyswarm_ping"})
        with self._pending_lock:
            expired = {p for p in self._pending if p.deadline is not None and p.deadline < now}
            self._pending -= expired
        for p in expired:
            p.finish(None, ProposalTimeout("no commit before the deadline; outcome unknown"))

    def _deliver_events(self) -> None:
        while True:
            event = self._events.get()
            if event is None:
                return
            if self._on_leader_change is not None:
                try:
                    self._on_leader_change(event[0])
                except Exception:
                    log.exception("on_leader_change callback failed")

    # -- serializer hooks (driver thread) --------------------------------------------

    def _serialize(self, file_name: str, entries: tuple[Any, Any, Any]) -> None:
        raftdisk.write_dump(file_name, entries, self._machine.snapshot())

    def _deserialize(self, file_name: str) -> tuple[Any, Any, Any]:
        return raftdisk.load_dump(file_name, self._machine.restore)

    # -- proposals -----------------------------------------------------------------

    def status(self) -> RaftStatus:
        return self._status

    def propose(self, data: bytes, *, timeout: float) -> bytes:
        """Replicate ``data``; return ``machine.apply(data)`` as run on this leader."""
        result = self._call(lambda cb: self._engine.apply_entry(data, callback=cb), timeout)
        assert isinstance(result, bytes)
        return result

    def propose_async(
        self, data: bytes, callback: Callback, *, timeout: float | None = None
    ) -> None:
        """Like propose, but ``callback(result, error)`` fires exactly once: on the raft
        thread (keep it short), or in the caller's thread when refused at once."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self._check_writable(deadline=None)
        except RaftError as e:
            callback(None, e)
            return
        self._submit(lambda cb: self._engine.apply_entry(data, callback=cb), callback, deadline)

    def barrier(self, *, timeout: float) -> None:
        """Commit a no-op as leader: afterwards this node's state reflects every write
        committed before the call (a linearizable read point)."""
        self._call(
            lambda cb: self._engine._applyCommand(b"", cb, _COMMAND_TYPE.NO_OP),
            timeout,
        )

    def _call(self, enqueue: Callable[[Any], None], timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        self._check_writable(deadline=deadline)
        done = threading.Event()
        box: list[tuple[bytes | None, RaftError | None]] = []

        def on_done(result: bytes | None, error: RaftError | None) -> None:
            box.append((result, error))
            done.set()

        pending = self._submit(enqueue, on_done, None)
        if not done.wait(max(0.0, deadline - time.monotonic())):
            with self._pending_lock:
                self._pending.discard(pending)
            pending.finish(None, ProposalTimeout(f"no commit within {timeout:g}s; outcome unknown"))
        result, error = box[0]
        if error is not None:
            raise error
        return result

    def _submit(
        self, enqueue: Callable[[Any], None], callback: Callback, deadline: float | None
    ) -> _Pending:
        pending = _Pending(callback, deadline)
        with self._pending_lock:
            self._pending.add(pending)

        def on_result(result: Any, reason: int) -> None:
            with self._pending_lock:
                self._pending.discard(pending)
            error = _translate(result, reason, self._status.leader)
            pending.finish(None if error else result, error)

        enqueue(on_result)
        self._wake()
        return pending

    def _wake(self) -> None:
        if self._waker is not None:
            self._waker.wake()

    def _check_writable(self, *, deadline: float | None) -> None:
        """Return when this node is a leader with a connected quorum; raise NotLeader
        at once on a follower that knows its leader; else wait for one until the
        deadline (no deadline: decide now), then raise NoLeader."""
        with self._cond:
            while True:
                if self._closed or self._engine is None:
                    raise RaftError("the raft node is not running")
                st = self._status
                if st.is_leader and st.has_quorum:
                    return
                if st.leader is not None and not st.is_leader:
                    raise NotLeader(st.leader)
                remaining = 0.0 if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    raise NoLeader(self._why_no_leader(st))
                self._cond.wait(min(remaining, 0.05))

    @staticmethod
    def _why_no_leader(st: RaftStatus) -> str:
        up = 1 + sum(st.reachable.values())
        if st.is_leader or up * 2 <= len(st.members):
            return f"quorum lost ({up} of {len(st.members)} managers reachable)"
        return "election in progress"

    # -- membership ----------------------------------------------------------------

    def add_member(self, addr: str, *, timeout: float) -> None:
        """Add a voting member (on the leader). Returns once the change is committed;
        a no-op if ``addr`` already is a member."""
        self._change_member(addr, add=True, timeout=timeout)

    def remove_member(self, addr: str, *, timeout: float) -> None:
        """Remove a member (on the leader). The leader cannot remove itself: call
        :meth:`transfer_leadership` first and remove it from the new leader."""
        if addr == self._addr:
            raise RaftError("the leader cannot remove itself; transfer leadership first")
        self._change_member(addr, add=False, timeout=timeout)

    def _change_member(self, addr: str, *, add: bool, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        change = self._engine.addNodeToCluster if add else self._engine.removeNodeFromCluster
        while True:
            self._check_writable(deadline=deadline)
            if (addr in self._status.members) == add:
                return
            try:
                self._call(lambda cb: change(addr, callback=cb), deadline - time.monotonic())
                return
            except _Denied:
                if time.monotonic() + 0.05 > deadline:
                    raise
            time.sleep(0.05)

    def transfer_leadership(self, *, timeout: float) -> str:
        """Hand leadership to the most caught-up follower; returns the new leader."""
        deadline = time.monotonic() + timeout
        self._check_writable(deadline=deadline)
        self._calls.put(lambda: self._engine.transferLeadership())
        self._wake()
        with self._cond:
            while True:
                st = self._status
                if st.leader is not None and not st.is_leader:
                    return st.leader
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ProposalTimeout(f"leadership not transferred within {timeout:g}s")
                self._cond.wait(min(remaining, 0.05))

    # -- disaster recovery -----------------------------------------------------------

    @staticmethod
    def reset_membership(data_dir: Path, *, self_addr: str) -> None:
        """For ``swarm init --force-new-cluster``, with the node stopped: keep every log
        entry and the snapshot, but make ``self_addr`` the only member. Membership
        entries in the journal become no-ops (so replay cannot re-add old members) and
        the dump's and members.json's member lists become ``[self_addr]``. Start the
        node afterwards as usual; it elects itself and commits the kept log."""
        try:
            raftdisk.reset_membership(Path(data_dir), self_addr)
        except raftdisk.DumpFormatError as e:
            raise RaftError(str(e)) from None

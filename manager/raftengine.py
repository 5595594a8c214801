"""The pysyncobj adapter under :class:`manager.raft.RaftNode`: the only subclasses of
and patches to pysyncobj.

- :class:`Engine` is the ``SyncObj``: one replicated method, ``apply_entry``, that runs
  ``machine.apply`` on every member; a raising apply returns :class:`ApplyFailed`
  instead of wedging the log. A *passive* engine (a joining manager) never starts an
  election until a leader has contacted it (pysyncobj has no pre-vote).
- :class:`Transport` records itself on the engine so the driver can ping idle peers.
- :class:`Waker` is a pipe on pysyncobj's poller: a queued proposal wakes the driver's
  ``doTick`` at once instead of after the tick period.
- :func:`make_conf` maps :class:`manager.raft.Timing` onto pysyncobj's settings.
- ``MetaStorer.getMeta`` is patched to close the file it reads.

Invariant: all of this runs on the node's driver thread (pysyncobj is built with
``autoTick=False``), except :meth:`Waker.wake`, which any thread may call.
``manager.raft`` also undoes pysyncobj's ``socket.inet_ntop`` stub right after
importing pysyncobj; it imports this module, so the fix is in place before anything
here runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj import journal as _journal
from pysyncobj import serializer as _serializer
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.transport import TCPTransport

from manager.raftdisk import DUMP_FILE, JOURNAL_FILE

if TYPE_CHECKING:
    from manager.raft import StateMachine, Timing

log = logging.getLogger("manager.raft")  # where these records were always logged


def _get_meta(self: Any) -> dict[str, Any]:
    # pysyncobj 0.3.17 reads the journal's meta file without closing it (a
    # ResourceWarning on every start); same behaviour, file closed.
    try:
        with open(self.getPath(), "rb") as f:
            return dict(_journal.loads(f.read()))
    except Exception:
        return {}


_journal.MetaStorer.getMeta = _get_meta

_send_snapshot_chunk = _serializer.Serializer.getTransmissionData


def _get_transmission_data(self: Any, transmission_id: Any) -> Any:
    # pysyncobj 0.3.17 forgets a finished (or failed) snapshot transmission without
    # closing the dump file it was reading; close it when the transmission ends.
    before = self._Serializer__transmissions.get(transmission_id)
    result = _send_snapshot_chunk(self, transmission_id)
    after = self._Serializer__transmissions.get(transmission_id)
    opened = (after or before or {}).get("file")
    if opened is not None and after is None:
        opened.close()
    return result


_serializer.Serializer.getTransmissionData = _get_transmission_data


def make_conf(
    t: Timing,
    password: str,
    data_dir: Path,
    serializer: Callable[[str, tuple[Any, Any, Any]], None],
    deserializer: Callable[[str], tuple[Any, Any, Any]],
) -> Any:
    """pysyncobj's configuration: our driver ticks it, our dump hooks write the dump."""
    lo, hi = t.election_timeout
    return SyncObjConf(
        password=password,
        autoTick=False,
        useFork=False,
        journalFile=str(data_dir / JOURNAL_FILE),
        fullDumpFile=str(data_dir / DUMP_FILE),
        serializer=serializer,
        deserializer=deserializer,
        dynamicMembershipChange=True,
        appendEntriesUseBatch=True,  # unbatched mode truncates applied entries
        commandsWaitLeader=False,  # fail fast; never apply a stale queued write late
        raftMinTimeout=lo,
        raftMaxTimeout=hi,
        appendEntriesPeriod=t.append_period,
        leaderFallbackTimeout=t.election_timeout[1],
        connectionTimeout=max(t.connection_timeout, t.election_timeout[1]),
        connectionRetryTime=t.reconnect,
        logCompactionMinEntries=t.compaction_min_entries,
        logCompactionMinTime=t.compaction_min_time,
        bindRetryTime=0.1,
        maxBindRetries=30,
    )


class ApplyFailed:
    """Result marker: machine.apply raised; kept off the wire (results stay local)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Transport(TCPTransport):  # type: ignore[misc]
    """Remembers itself on the SyncObj so the driver can ping idle peers."""

    def __init__(self, sync_obj: Any, self_node: Any, other_nodes: Any) -> None:
        super().__init__(sync_obj, self_node, other_nodes)
        sync_obj.pyswarm_transport = self


class Engine(SyncObj):  # type: ignore[misc]
    def __init__(
        self, self_addr: str, peers: Sequence[str], conf: Any, machine: StateMachine, passive: bool
    ) -> None:
        self._machine = machine
        self.passive = passive
        self.pyswarm_transport: Any = None
        super().__init__(self_addr, list(peers), conf, transportClass=Transport)

    def _SyncObj__connectedToAnyone(self) -> bool:
        # pysyncobj starts an election only when this is true: a passive (joining)
        # node must not campaign before a leader has contacted it.
        return not self.passive and bool(SyncObj._SyncObj__connectedToAnyone(self))

    @replicated  # type: ignore[untyped-decorator]
    def apply_entry(self, data: bytes) -> bytes | ApplyFailed:
        try:
            return self._machine.apply(data)
        except Exception as e:  # a raising apply must not wedge the log
            log.exception("state machine apply failed")
            return ApplyFailed(e)


class Waker:
    """A pipe on pysyncobj's poller: proposals wake the driver instead of waiting out
    the tick. Closed under the lock so a late wake never writes to a reused fd."""

    def __init__(self, poller: Any) -> None:
        self._lock = threading.Lock()
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self._open = True
        poller.subscribe(self._r, self._drain, POLL_EVENT_TYPE.READ)

    def _drain(self, _fd: int, _events: int) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._r, 4096):
                pass

    def wake(self) -> None:
        with self._lock:
            if self._open:
                with contextlib.suppress(BlockingIOError):
                    os.write(self._w, b"w")

    def close(self) -> None:
        with self._lock:
            if self._open:
                self._open = False
                os.close(self._r)
                os.close(self._w)

"""What a raft node keeps on disk, apart from pysyncobj's own journal.

A raft data dir holds three files:

- ``raft.journal`` (:data:`JOURNAL_FILE`): pysyncobj's ``FileJournal`` of log entries,
  written by pysyncobj; only :func:`reset_membership` edits it.
- ``raft.dump`` (:data:`DUMP_FILE`): the compacted log, in our own format so that
  **nothing pickled reaches the disk**. :class:`manager.raft.RaftNode` hands
  :func:`write_dump` and :func:`load_dump` to pysyncobj as its serializer and
  deserializer hooks. Layout::

      PYSWARM-RAFT-DUMP-1\\n              the magic line (_DUMP_MAGIC)
      <u32 little-endian N>              length of the JSON header
      <N bytes of JSON>                  {"last": E, "prev": E, "members": [addr, ...]}
      <rest of the file>                 machine.snapshot() bytes, opaque here

  where each E is a log entry ``[base64(command), index, term]``: the two entries at
  the compaction boundary, which pysyncobj puts back at the head of its log.
- ``members.json`` (:data:`MEMBERS_FILE`): the sorted member list, replaced
  atomically whenever membership changes; on restart it wins over the ``peers``
  the node was given.

Writes of the dump and of members.json go to a temporary file renamed into place (the
dump is also fsynced), so a crash leaves the old file or the new one, never half.
Everything here runs on the raft driver thread, or with the node stopped.
"""

from __future__ import annotations

import base64
import json
import os
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pysyncobj.journal import FileJournal
from pysyncobj.node import TCPNode
from pysyncobj.syncobj import _COMMAND_TYPE

JOURNAL_FILE = "raft.journal"
DUMP_FILE = "raft.dump"
MEMBERS_FILE = "members.json"
_DUMP_MAGIC = b"PYSWARM-RAFT-DUMP-1\n"
_MEMBERSHIP = bytes([_COMMAND_TYPE.MEMBERSHIP])
_NO_OP = bytes([_COMMAND_TYPE.NO_OP])

Entry = tuple[bytes, int, int]  # (command, index, term), as pysyncobj's log holds them


class DumpFormatError(ValueError):
    """The file is not a pyswarm raft dump (manager.raft reports it as RaftError)."""


# -- dump file: our format, no pickle -----------------------------------------------


def write_dump(path: str, entries: tuple[Any, Any, Any], snapshot: bytes) -> None:
    """pysyncobj's serializer: ``entries`` is (last, prev, cluster nodes)."""
    last, prev, cluster = entries
    header = {
        "last": [base64.b64encode(last[0]).decode(), last[1], last[2]],
        "prev": [base64.b64encode(prev[0]).decode(), prev[1], prev[2]],
        "members": sorted(str(n.id) for n in cluster),
    }
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(_DUMP_MAGIC + struct.pack("<I", len(raw)) + raw + snapshot)
        f.flush()
        os.fsync(f.fileno())


def read_dump(path: str | Path) -> tuple[dict[str, Any], bytes]:
    """The dump's JSON header and the snapshot bytes after it."""
    blob = Path(path).read_bytes()
    if not blob.startswith(_DUMP_MAGIC):
        raise DumpFormatError(f"{path} is not a pyswarm raft dump")
    at = len(_DUMP_MAGIC)
    (size,) = struct.unpack_from("<I", blob, at)
    header = json.loads(blob[at + 4 : at + 4 + size])
    return header, blob[at + 4 + size :]


def load_dump(path: str, restore: Callable[[bytes], None]) -> tuple[Entry, Entry, list[Any]]:
    """pysyncobj's deserializer: hand the snapshot to ``restore`` and return (last,
    prev, cluster nodes) as pysyncobj expects them."""
    header, snapshot = read_dump(path)
    restore(snapshot)
    cluster = [TCPNode(m) for m in header["members"]]
    return _entry(header["last"]), _entry(header["prev"]), cluster


def _entry(raw: list[Any]) -> Entry:
    return (base64.b64decode(raw[0]), int(raw[1]), int(raw[2]))


# -- members.json ---------------------------------------------------------------------


def _members_path(data_dir: Path) -> Path:
    return data_dir / MEMBERS_FILE


def save_members(data_dir: Path, members: Sequence[str]) -> None:
    tmp = data_dir / (MEMBERS_FILE + ".tmp")
    tmp.write_text(json.dumps(sorted(members)))
    os.replace(tmp, _members_path(data_dir))


def load_members(data_dir: Path) -> list[str] | None:
    """The stored member list; None in a brand-new data dir."""
    try:
        return [str(m) for m in json.loads(_members_path(data_dir).read_text())]
    except FileNotFoundError:
        return None


# -- disaster recovery ----------------------------------------------------------------


def reset_membership(data_dir: Path, self_addr: str) -> None:
    """The file surgery behind :meth:`manager.raft.RaftNode.reset_membership` (node
    stopped): membership entries in the journal and the dump become no-ops, and the
    dump's and members.json's member lists become ``[self_addr]``."""
    journal_path = data_dir / JOURNAL_FILE
    if journal_path.exists():
        journal = FileJournal(str(journal_path))
        try:
            entries = [journal[i] for i in range(len(journal))]
            if any(e[0][:1] == _MEMBERSHIP for e in entries):
                journal.clear()
                for command, idx, term in entries:
                    journal.add(_NO_OP if command[:1] == _MEMBERSHIP else command, idx, term)
        finally:
            journal._destroy()
    dump_path = data_dir / DUMP_FILE
    if dump_path.exists():
        header, snapshot = read_dump(dump_path)
        last, prev = _entry(header["last"]), _entry(header["prev"])
        last, prev = (
            (_NO_OP if e[0][:1] == _MEMBERSHIP else e[0], e[1], e[2]) for e in (last, prev)
        )
        tmp = str(dump_path) + ".tmp"
        write_dump(tmp, (last, prev, [TCPNode(self_addr)]), snapshot)
        os.replace(tmp, dump_path)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    save_members(data_dir, [self_addr])

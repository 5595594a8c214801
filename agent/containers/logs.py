"""Reading container logs written by conmon in the k8s-file format.

conmon appends one record per line:

    2026-11-28T11:51:46.046964410+00:00 stdout F hi

an RFC 3339 timestamp with nanoseconds and the host's UTC offset, the stream, a tag and
the data. `F` ends a line (the container's newline is the file's newline); `P` means
conmon read the line only in part (the pipe buffer ended mid-line, or the container has
not written the newline yet): the line goes on in the next record *of the same stream*,
and records of the other stream may come in between. All lines read from one pipe
buffer share one timestamp.

Three layers, each usable alone:

- `parse_line` turns one record into a `LogRecord`, or None for anything malformed.
- `read_logs` yields whole lines: P records are joined per stream until their F record.
  A joined line carries the time of its last record; a line never ended (the container
  exited after `printf hi`) comes out at the end with `partial=True` and no newline.
  `tail=N` scans backwards in blocks from the end of the file to find where the last N
  lines begin, then reads forwards from there, so a multi-GB log costs a few blocks.
- `follow_logs` does the same, then polls for appended records until the container
  stops. conmon rotates a full log by renaming a fresh file over the path (new inode);
  the follower drains the old file before it switches, and starts over at 0 when the
  file shrinks in place (truncation).

Only newline-terminated records are read: conmon writes a record with writev, which a
reader can observe half done; the unterminated rest is left for the next read.

Usage:

    for line in read_logs(path, tail=10, stderr=False):
        out.write(line.data)
"""

from __future__ import annotations

import collections
import datetime
import itertools
import os
import re
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

STDOUT = "stdout"
STDERR = "stderr"

BLOCK_SIZE = 64 * 1024
# conmon's records are at most one pipe buffer (1 MiB at most) plus a header; longer
# "records" are garbage and are dropped instead of buffered.
MAX_RECORD = 2 * 1024 * 1024
# A line that keeps growing through P records (progress bars without newlines) is handed
# out in pieces of this size rather than held in memory.
MAX_LINE = 1024 * 1024

_RECORD = re.compile(
    rb"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)"
    rb" (stdout|stderr) ([FP])(?: (.*))?",
    re.DOTALL,
)
_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()
_NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One record of the file, or (from the readers) one whole line.

    `data` excludes the newline for a parsed record; a whole line from the readers ends
    with b"\\n" unless `partial` (the line was never ended).
    """

    time_ns: int
    stream: str
    partial: bool
    data: bytes

    @property
    def time(self) -> float:
        """Unix seconds (float; `time_ns` keeps the full precision)."""
        return self.time_ns / _NS


def parse_line(line: bytes) -> LogRecord | None:
    """Parse one k8s-file record (with or without its newline); None when malformed."""
    match = _RECORD.fullmatch(line[:-1] if line.endswith(b"\n") else line)
    if match is None:
        return None
    time_ns = _epoch_ns(match.groups())
    if time_ns is None:
        return None
    stream, tag, data = match.group(9, 10, 11)
    return LogRecord(time_ns, stream.decode(), tag == b"P", data or b"")


def _epoch_ns(groups: tuple[bytes | None, ...]) -> int | None:
    """Nanoseconds since the epoch for the timestamp groups of `_RECORD`."""
    year, month, day, hour, minute, second = (int(g or 0) for g in groups[:6])
    fraction, offset = groups[6] or b"", groups[7] or b"Z"
    if hour > 23 or minute > 59 or second > 59:
        return None
    try:
        days = datetime.date(year, month, day).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        return None
    seconds = days * 86400 + hour * 3600 + minute * 60 + second - _offset_seconds(offset)
    return seconds * _NS + int(fraction.ljust(9, b"0"))


def _offset_seconds(offset: bytes) -> int:
    if offset == b"Z":
        return 0
    sign = -1 if offset[:1] == b"-" else 1
    return sign * (int(offset[1:3]) * 3600 + int(offset[4:6]) * 60)


@dataclass(frozen=True)
class _Filter:
    streams: frozenset[str]
    since_ns: int

    @classmethod
    def make(cls, *, since: float, stdout: bool, stderr: bool) -> _Filter:
        streams = frozenset(s for s, wanted in ((STDOUT, stdout), (STDERR, stderr)) if wanted)
        return cls(streams, round(since * _NS) if since > 0 else 0)


class _Joiner:
    """Joins P records into whole lines, per stream, and applies the filter."""

    def __init__(self, filt: _Filter) -> None:
        self._filt = filt
        self._parts: dict[str, list[bytes]] = {}
        self._sizes: dict[str, int] = {}
        self._last_ns: dict[str, int] = {}

    def feed(self, raw_lines: Iterable[bytes]) -> Iterator[LogRecord]:
        for raw in raw_lines:
            record = parse_line(raw)
            if record is not None and record.stream in self._filt.streams:
                line = self._push(record)
                if line is not None and line.time_ns >= self._filt.since_ns:
                    yield line

    def flush(self) -> Iterator[LogRecord]:
        """The lines never ended, oldest first; called once the log is complete."""
        for stream in sorted(self._parts, key=self._last_ns.__getitem__):
            line = self._take(stream, partial=True)
            if line.time_ns >= self._filt.since_ns:
                yield line

    def _push(self, record: LogRecord) -> LogRecord | None:
        stream = record.stream
        self._parts.setdefault(stream, []).append(record.data)
        self._sizes[stream] = self._sizes.get(stream, 0) + len(record.data)
        self._last_ns[stream] = record.time_ns
        if not record.partial:
            return self._take(stream, partial=False)
        if self._sizes[stream] >= MAX_LINE:
            return self._take(stream, partial=True)
        return None

    def _take(self, stream: str, *, partial: bool) -> LogRecord:
        data = b"".join(self._parts.pop(stream))
        del self._sizes[stream]
        return LogRecord(self._last_ns[stream], stream, partial, data if partial else data + b"\n")


class _Cursor:
    """Reads newline-terminated lines from an open file, remembering where it stopped."""

    def __init__(self, file: BinaryIO, offset: int) -> None:
        self.file = file
        self.offset = offset
        self._rest = b""
        self._oversized = False

    def lines(self) -> Iterator[bytes]:
        """Every complete line from the last stop to the current end of the file."""
        self.file.seek(self.offset)
        while chunk := self.file.read(BLOCK_SIZE):
            self.offset += len(chunk)
            *complete, rest = (self._rest + chunk).split(b"\n")
            if self._oversized and complete:
                complete, self._oversized = complete[1:], False
            self._rest = rest
            if len(rest) > MAX_RECORD:
                self._rest, self._oversized = b"", True
            yield from complete

    def rewind(self) -> None:
        self.offset, self._rest, self._oversized = 0, b"", False


def _last_line_end(file: BinaryIO, size: int) -> int:
    """Offset just past the file's last newline (0 when there is none)."""
    pos = size
    while pos > 0:
        n = min(BLOCK_SIZE, pos)
        pos -= n
        file.seek(pos)
        found = file.read(n).rfind(b"\n")
        if found >= 0:
            return pos + found + 1
    return 0


def _backward_lines(file: BinaryIO, size: int) -> Iterator[tuple[int, bytes]]:
    """(offset, line) of every complete line, last first, reading blocks from the end."""
    pos = _last_line_end(file, size) - 1  # the newline ending the last line
    carry, oversized = b"", False
    while pos > 0:
        n = min(BLOCK_SIZE, pos)
        pos -= n
        file.seek(pos)
        chunk = file.read(n) + carry
        parts = chunk.split(b"\n")
        line_end = pos + len(chunk)
        if oversized and len(parts) > 1:  # the head of a dropped over-long line
            line_end -= len(parts.pop()) + 1
            oversized = False
        for part in reversed(parts[1:]):
            line_end -= len(part)
            yield line_end, part
            line_end -= 1
        carry = parts[0]
        if len(carry) > MAX_RECORD:
            carry, oversized = b"", True
    if pos == 0 and not oversized:
        yield 0, carry


class _TailScan:
    """Finds where reading must start so that the last `tail` lines come out whole.

    Walking backwards, each F record (or a P record with no later record of its stream,
    i.e. a line never ended) ends a line; the line's P records precede it up to the
    previous F of the same stream. The start is the earliest record of the lines taken.
    Reading forwards from there may give a few extra or cut lines first; the caller
    keeps the last `tail`.
    """

    def __init__(self, filt: _Filter, *, tail: int, size: int) -> None:
        self.filt = filt
        self.needed = tail  # lines still to take; negative: all since `since`
        self.start = size
        self._open: dict[str, int] = {}  # stream -> earliest offset of its open line
        self._seen: set[str] = set()

    @property
    def done(self) -> bool:
        return self.needed == 0 and not self._open

    def step(self, offset: int, record: LogRecord) -> None:
        stream = record.stream
        never_ended = record.partial and stream not in self._seen
        self._seen.add(stream)
        if stream in self._open:
            if record.partial:
                self._open[stream] = offset
                return
            self.start = min(self.start, self._open.pop(stream))
        if record.time_ns < self.filt.since_ns:
            self.needed = 0  # the log is in time order: nothing earlier qualifies
        elif self.needed != 0 or never_ended:
            # Lines never ended come out last, whatever their position: always take them.
            if self.needed > 0:
                self.needed -= 1
            self._open[stream] = offset

    def result(self) -> int:
        return min([self.start, *self._open.values()])


def _start_offset(file: BinaryIO, size: int, filt: _Filter, *, tail: int) -> int:
    if tail == 0:
        return size
    if tail < 0 and filt.since_ns == 0:
        return 0
    scan = _TailScan(filt, tail=tail, size=size)
    for offset, raw in _backward_lines(file, size):
        record = parse_line(raw)
        if record is not None and record.stream in filt.streams:
            scan.step(offset, record)
            if scan.done:
                break
    return scan.result()


def _last(lines: Iterable[LogRecord], tail: int) -> Iterable[LogRecord]:
    return lines if tail < 0 else collections.deque(lines, maxlen=tail)


def read_logs(
    path: Path,
    *,
    tail: int = -1,
    since: float = 0.0,
    stdout: bool = True,
    stderr: bool = True,
) -> Generator[LogRecord, None, None]:
    """Whole lines of the log at `path`, oldest first; nothing when it does not exist.

    `tail` (negative: all) counts lines after the stream and `since` filters; `since`
    keeps lines whose time is at or after it (unix seconds), as `docker logs --since`.
    Caveat: with `tail`, a never-ended line shows only if it lies among the records
    scanned for the last `tail` lines (reading everything gives it last, as follow does).
    """
    filt = _Filter.make(since=since, stdout=stdout, stderr=stderr)
    try:
        file = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        return
    with file:
        size = os.fstat(file.fileno()).st_size
        cursor = _Cursor(file, _start_offset(file, size, filt, tail=tail))
        joiner = _Joiner(filt)
        yield from _last(itertools.chain(joiner.feed(cursor.lines()), joiner.flush()), tail)


class _Follower:
    """An open log file that notices when conmon renames a new one over its path."""

    def __init__(self, path: Path, file: BinaryIO) -> None:
        self.path = path
        self.cursor = _Cursor(file, 0)

    def close(self) -> None:
        self.cursor.file.close()

    def replaced(self) -> bool:
        """True when the path now names another file (rotation)."""
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:  # removed with its container: keep the open file
            return False
        mine = os.fstat(self.cursor.file.fileno())
        return (on_disk.st_ino, on_disk.st_dev) != (mine.st_ino, mine.st_dev)

    def shrank(self) -> bool:
        return os.fstat(self.cursor.file.fileno()).st_size < self.cursor.offset

    def reopen(self) -> None:
        try:
            file = open(self.path, "rb")  # noqa: SIM115 - owned by the follower
        except FileNotFoundError:
            return
        self.close()
        self.cursor = _Cursor(file, 0)


def _open_when_present(
    path: Path, *, is_running: Callable[[], bool], poll: float, sleep: Callable[[float], None]
) -> BinaryIO | None:
    """The open log file, waiting for conmon to create it; None if the container stopped."""
    while True:
        running = is_running()  # before the attempt, so a file created meanwhile is seen
        try:
            return open(path, "rb")  # the caller closes it
        except FileNotFoundError:
            if not running:
                return None
        sleep(poll)


def follow_logs(
    path: Path,
    *,
    tail: int = -1,
    since: float = 0.0,
    stdout: bool = True,
    stderr: bool = True,
    is_running: Callable[[], bool],
    poll: float = 0.05,
    sleep: Callable[[float], None] = time.sleep,
) -> Generator[LogRecord, None, None]:
    """Like `read_logs`, then the lines appended while `is_running()` holds.

    Ends once the container has stopped and the file is read to its end: `is_running` is
    asked before each read, so everything written before it stopped comes out. Waits for
    the file while the container runs and it does not exist yet. Polls every `poll`
    seconds through `sleep`; closing the generator releases the file.
    """
    filt = _Filter.make(since=since, stdout=stdout, stderr=stderr)
    file = _open_when_present(path, is_running=is_running, poll=poll, sleep=sleep)
    if file is None:
        return
    follower = _Follower(path, file)
    try:
        follower.cursor.offset = _start_offset(
            file, os.fstat(file.fileno()).st_size, filt, tail=tail
        )
        joiner = _Joiner(filt)
        running = is_running()
        # With tail=0 reading starts at the end: whatever is there by now is new.
        yield from _last(joiner.feed(follower.cursor.lines()), tail if tail > 0 else -1)
        yield from _follow(
            follower, joiner, running=running, is_running=is_running, poll=poll, sleep=sleep
        )
        yield from joiner.flush()
    finally:
        follower.close()


def _follow(
    follower: _Follower,
    joiner: _Joiner,
    *,
    running: bool,
    is_running: Callable[[], bool],
    poll: float,
    sleep: Callable[[float], None],
) -> Iterator[LogRecord]:
    """Poll for appended lines; `running` is what `is_running()` said before the last read."""
    while True:
        if follower.replaced():
            # conmon flushed the old file before renaming the new one over it: drain it.
            yield from joiner.feed(follower.cursor.lines())
            follower.reopen()
        elif follower.shrank():
            follower.cursor.rewind()
        elif not running:
            return
        else:
            sleep(poll)
        running = is_running()
        yield from joiner.feed(follower.cursor.lines())

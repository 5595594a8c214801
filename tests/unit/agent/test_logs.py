"""conmon k8s-file logs: parsing, joining partial records, tail, since, follow."""

from __future__ import annotations

import datetime
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from agent.containers import logs
from agent.containers.logs import LogRecord, follow_logs, parse_line, read_logs

pytestmark = pytest.mark.unit

T0 = 1_795_866_706_046_964_410  # 2026-11-28T11:51:46.046964410Z


def stamp(time_ns: int, *, offset_minutes: int = 0) -> str:
    tz = datetime.timezone(datetime.timedelta(minutes=offset_minutes))
    dt = datetime.datetime.fromtimestamp(time_ns // 10**9, tz)
    sign = "-" if offset_minutes < 0 else "+"
    hours, minutes = divmod(abs(offset_minutes), 60)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{time_ns % 10**9:09d}{sign}{hours:02d}:{minutes:02d}"


def rec(seq: int, stream: str, tag: str, data: bytes) -> bytes:
    """A record written `seq` milliseconds after T0, as conmon writes it."""
    return f"{stamp(T0 + seq * 1_000_000)} {stream} {tag} ".encode() + data + b"\n"


def line(seq: int, stream: str, data: bytes, *, partial: bool = False) -> LogRecord:
    return LogRecord(T0 + seq * 1_000_000, stream, partial, data)


def write(path: Path, *records: bytes) -> Path:
    with path.open("ab") as f:
        f.write(b"".join(records))
    return path


# ---- parse_line ---------------------------------------------------------------------


def test_parse_full_record() -> None:
    r = parse_line(b"2026-11-28T11:51:46.046964410+00:00 stdout F hi\n")
    assert r == LogRecord(T0, "stdout", False, b"hi")
    assert r.time == pytest.approx(1795866706.04696441)


def test_parse_partial_record_keeps_spaces_and_bytes() -> None:
    r = parse_line(b"2026-11-28T11:51:46.046964410+00:00 stderr P  a b\r\xff")
    assert r == LogRecord(T0, "stderr", True, b" a b\r\xff")


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-28T12:51:46.046964410+01:00",
        "2026-11-28T06:21:46.046964410-05:30",
        "2026-11-28T11:51:46.046964410Z",
    ],
)
def test_parse_offsets(text: str) -> None:
    r = parse_line(f"{text} stdout F x".encode())
    assert r is not None and r.time_ns == T0


def test_parse_short_or_missing_fraction() -> None:
    r = parse_line(b"2026-11-28T11:51:46.5+00:00 stdout F x")
    assert r is not None and r.time_ns == T0 - 46964410 + 500_000_000
    r = parse_line(b"2026-11-28T11:51:46+00:00 stdout F x")
    assert r is not None and r.time_ns == T0 - 46964410


@pytest.mark.parametrize(
    "record", [b"2026-11-28T11:51:46Z stdout F ", b"2026-11-28T11:51:46Z stdout F"]
)
def test_parse_empty_line(record: bytes) -> None:
    assert parse_line(record) == LogRecord(T0 - 46964410, "stdout", False, b"")


@pytest.mark.parametrize(
    "record",
    [
        b"",
        b"hello world",
        b"2026-11-28T11:51:46Z stdin F x",
        b"2026-11-28T11:51:46Z stdout X x",
        b"2026-11-28T11:51:46Z stdout Fx",
        b"2026-11-28T11:51:46Z  stdout F x",
        b"2026-02-30T11:51:46Z stdout F x",
        b"2026-11-28T24:00:00Z stdout F x",
        b"2026-11-28T11:51:46.0123456789Z stdout F x",
        b"2026-11-28 11:51:46Z stdout F x",
    ],
)
def test_parse_malformed(record: bytes) -> None:
    assert parse_line(record) is None


# ---- read_logs ----------------------------------------------------------------------


def test_missing_file_reads_nothing(tmp_path: Path) -> None:
    assert list(read_logs(tmp_path / "nope.log")) == []


def test_joins_partial_records_per_stream(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.log",
        rec(1, "stdout", "P", b"hel"),
        rec(2, "stderr", "F", b"oops"),
        b"garbage that is skipped\n",
        rec(3, "stdout", "P", b"lo "),
        rec(4, "stdout", "F", b"world"),
        rec(5, "stdout", "F", b""),
    )
    assert list(read_logs(path)) == [
        line(2, "stderr", b"oops\n"),
        line(4, "stdout", b"hello world\n"),
        line(5, "stdout", b"\n"),
    ]


def test_stream_selection(tmp_path: Path) -> None:
    path = write(tmp_path / "c.log", rec(1, "stdout", "F", b"o"), rec(2, "stderr", "F", b"e"))
    assert [r.data for r in read_logs(path, stderr=False)] == [b"o\n"]
    assert [r.data for r in read_logs(path, stdout=False)] == [b"e\n"]
    assert list(read_logs(path, stdout=False, stderr=False)) == []


def test_never_ended_line_comes_last_without_newline(tmp_path: Path) -> None:
    path = write(tmp_path / "c.log", rec(1, "stdout", "P", b"> "), rec(2, "stderr", "F", b"e"))
    assert list(read_logs(path)) == [
        line(2, "stderr", b"e\n"),
        line(1, "stdout", b"> ", partial=True),
    ]


def test_unterminated_last_record_is_left_for_later(tmp_path: Path) -> None:
    path = write(tmp_path / "c.log", rec(1, "stdout", "F", b"a"), rec(2, "stdout", "F", b"b")[:-1])
    assert list(read_logs(path)) == [line(1, "stdout", b"a\n")]
    assert list(read_logs(path, tail=5)) == [line(1, "stdout", b"a\n")]


def test_since_keeps_lines_at_or_after(tmp_path: Path) -> None:
    path = write(tmp_path / "c.log", *(rec(i, "stdout", "F", b"%d" % i) for i in range(10)))
    since = (T0 + 7 * 1_000_000) / 1e9
    assert [r.data for r in read_logs(path, since=since)] == [b"7\n", b"8\n", b"9\n"]
    assert [r.data for r in read_logs(path, since=since, tail=2)] == [b"8\n", b"9\n"]
    assert list(read_logs(path, since=T0 / 1e9 + 3600)) == []


def test_since_uses_the_time_of_the_last_record_of_a_line(tmp_path: Path) -> None:
    path = write(tmp_path / "c.log", rec(1, "stdout", "P", b"a"), rec(5, "stdout", "F", b"b"))
    assert list(read_logs(path, since=(T0 + 3_000_000) / 1e9)) == [line(5, "stdout", b"ab\n")]


def test_tail(tmp_path: Path) -> None:
    path = write(tmp_path / "c.log", *(rec(i, "stdout", "F", b"%d" % i) for i in range(10)))
    assert [r.data for r in read_logs(path, tail=3)] == [b"7\n", b"8\n", b"9\n"]
    assert list(read_logs(path, tail=0)) == []
    assert len(list(read_logs(path, tail=100))) == 10


def test_tail_counts_lines_of_the_selected_stream(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.log",
        rec(1, "stderr", "F", b"e1"),
        rec(2, "stdout", "F", b"o1"),
        rec(3, "stderr", "P", b"e"),
        rec(4, "stdout", "F", b"o2"),
        rec(5, "stderr", "F", b"2"),
    )
    assert [r.data for r in read_logs(path, tail=2, stdout=False)] == [b"e1\n", b"e2\n"]
    assert [r.data for r in read_logs(path, tail=1)] == [b"e2\n"]
    assert [r.data for r in read_logs(path, tail=2)] == [b"o2\n", b"e2\n"]


def test_tail_reads_only_the_end_of_a_big_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "c.log", *(rec(i, "stdout", "F", b"x" * 100) for i in range(5000)))
    reads: list[int] = []
    real_open = open

    class Counting:
        def __init__(self, f: BinaryIO) -> None:
            self.f = f

        def read(self, n: int = -1) -> bytes:
            data: bytes = self.f.read(n)
            reads.append(len(data))
            return data

        def __getattr__(self, name: str):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()

    def counting_open(p: Path, mode: str) -> Counting:
        assert mode == "rb"
        return Counting(real_open(p, "rb"))

    monkeypatch.setattr(logs, "open", counting_open, raising=False)
    out = list(read_logs(path, tail=3))
    assert [r.time_ns for r in out] == [T0 + i * 1_000_000 for i in (4997, 4998, 4999)]
    assert sum(reads) < 4 * logs.BLOCK_SIZE < os.path.getsize(path) // 2


def random_log(rng: random.Random, n: int) -> list[bytes]:
    """Records of both streams with interleaved P chains, all ended but maybe the last."""
    records: list[bytes] = []
    open_chain = {"stdout": False, "stderr": False}
    for seq in range(n):
        stream = rng.choice(["stdout", "stderr"])
        tag = "P" if rng.random() < 0.4 else "F"
        if rng.random() < 0.05:
            records.append(b"not a record\n")
        data = bytes(rng.choice(b"abc ") for _ in range(rng.randrange(0, 40)))
        records.append(rec(seq, stream, tag, data))
        open_chain[stream] = tag == "P"
    for stream in ("stdout", "stderr"):
        if open_chain[stream]:
            records.append(rec(n, stream, "F", b"end"))
    if rng.random() < 0.5:  # a line never ended, as the very last record
        records.append(rec(n + 1, rng.choice(["stdout", "stderr"]), "P", b"prompt> "))
    return records


@pytest.mark.parametrize("seed", range(8))
def test_tail_agrees_with_reading_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    monkeypatch.setattr(logs, "BLOCK_SIZE", 97)  # lines straddle block boundaries
    rng = random.Random(seed)
    path = write(tmp_path / "c.log", *random_log(rng, 300))
    for stdout, stderr in [(True, True), (True, False), (False, True)]:
        everything = list(read_logs(path, stdout=stdout, stderr=stderr))
        for tail in [1, 2, 3, 7, 50, 1000]:
            got = list(read_logs(path, tail=tail, stdout=stdout, stderr=stderr))
            assert got == everything[-tail:], (tail, stdout, stderr)
        since = (T0 + rng.randrange(300) * 1_000_000) / 1e9
        expected = [r for r in everything if r.time_ns >= round(since * 1e9)]
        assert list(read_logs(path, since=since, stdout=stdout, stderr=stderr)) == expected
        assert (
            list(read_logs(path, since=since, tail=4, stdout=stdout, stderr=stderr))
            == (expected[-4:])
        )


def test_overlong_garbage_is_dropped_both_ways(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "BLOCK_SIZE", 64)
    monkeypatch.setattr(logs, "MAX_RECORD", 200)
    path = write(
        tmp_path / "c.log",
        b"y" * 1000 + b"\n",
        rec(1, "stdout", "F", b"a"),
        b"z" * 1000 + b"\n",
        rec(2, "stdout", "F", b"b"),
    )
    expected = [line(1, "stdout", b"a\n"), line(2, "stdout", b"b\n")]
    assert list(read_logs(path)) == expected
    assert list(read_logs(path, tail=2)) == expected
    assert list(read_logs(path, tail=10)) == expected


def test_very_long_line_is_handed_out_in_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "MAX_LINE", 10)
    path = write(
        tmp_path / "c.log",
        *(rec(i, "stdout", "P", b"abcd") for i in range(5)),
        rec(5, "stdout", "F", b"e"),
    )
    assert list(read_logs(path)) == [
        line(2, "stdout", b"abcdabcdabcd", partial=True),
        line(5, "stdout", b"abcdabcde\n"),
    ]


# ---- follow_logs --------------------------------------------------------------------


class Script:
    """A fake container: `sleep` performs the next step, `is_running` reports state."""

    def __init__(self, *steps: Callable[[], object]) -> None:
        self.steps = list(steps)
        self.running = True
        self.sleeps = 0

    def sleep(self, seconds: float) -> None:
        assert seconds == 0.05
        self.sleeps += 1
        assert self.sleeps < 100, "follow_logs never ended"
        if self.steps:
            self.steps.pop(0)()

    def is_running(self) -> bool:
        return self.running

    def stop(self) -> None:
        self.running = False


def follow(path: Path, script: Script, **kw: object) -> list[LogRecord]:
    return list(
        follow_logs(path, is_running=script.is_running, sleep=script.sleep, **kw)  # type: ignore[arg-type]
    )


def test_follow_reads_existing_then_appended_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "c.log", rec(1, "stdout", "F", b"a"), rec(2, "stdout", "F", b"b"))
    script = Script(
        lambda: write(path, rec(3, "stderr", "P", b"c")),
        lambda: None,
        lambda: write(path, rec(4, "stderr", "F", b"d")[:20]),  # a record half written
        lambda: write(path, rec(4, "stderr", "F", b"d")[20:]),
    )
    script.steps.append(script.stop)
    assert follow(path, script, tail=1) == [line(2, "stdout", b"b\n"), line(4, "stderr", b"cd\n")]


def test_follow_reads_what_was_written_before_the_stop(tmp_path: Path) -> None:
    path = write(tmp_path / "c.log", rec(1, "stdout", "F", b"a"))
    polls = iter([True, True, False])

    def is_running() -> bool:
        running = next(polls)
        if not running:  # the container wrote its last words, then exited
            write(path, rec(2, "stdout", "F", b"bye"), rec(3, "stderr", "P", b"no newline"))
        return running

    out = list(follow_logs(path, is_running=is_running, sleep=lambda s: None))
    assert out == [
        line(1, "stdout", b"a\n"),
        line(2, "stdout", b"bye\n"),
        line(3, "stderr", b"no newline", partial=True),
    ]


def test_follow_waits_for_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    script = Script(lambda: None, lambda: write(path, rec(1, "stdout", "F", b"a")))
    script.steps.append(script.stop)
    assert follow(path, script) == [line(1, "stdout", b"a\n")]


def test_follow_without_file_and_stopped_yields_nothing(tmp_path: Path) -> None:
    script = Script()
    script.stop()
    assert follow(tmp_path / "c.log", script) == []


def test_follow_survives_rotation(tmp_path: Path) -> None:
    path = write(tmp_path / "c.log", rec(1, "stdout", "F", b"a"))

    def rotate() -> None:
        # conmon flushes the old file, then renames a fresh one over the path.
        write(path, rec(2, "stdout", "P", b"b"))
        write(tmp_path / "c.log.tmp", rec(3, "stdout", "F", b"c"))
        os.rename(tmp_path / "c.log.tmp", path)

    script = Script(rotate, lambda: write(path, rec(4, "stdout", "F", b"d")))
    script.steps.append(script.stop)
    assert follow(path, script) == [
        line(1, "stdout", b"a\n"),
        line(3, "stdout", b"bc\n"),
        line(4, "stdout", b"d\n"),
    ]


def test_follow_starts_over_after_truncation(tmp_path: Path) -> None:
    path = write(tmp_path / "c.log", rec(1, "stdout", "F", b"a" * 50))

    def truncate() -> None:
        path.write_bytes(rec(2, "stdout", "F", b"b"))

    script = Script(truncate)
    script.steps.append(script.stop)
    assert follow(path, script) == [line(1, "stdout", b"a" * 50 + b"\n"), line(2, "stdout", b"b\n")]


def test_follow_applies_since_and_stream(tmp_path: Path) -> None:
    path = write(tmp_path / "c.log", rec(1, "stdout", "F", b"old"))
    script = Script(lambda: write(path, rec(5, "stderr", "F", b"e"), rec(6, "stdout", "F", b"o")))
    script.steps.append(script.stop)
    out = follow(path, script, since=(T0 + 2_000_000) / 1e9, stderr=False)
    assert out == [line(6, "stdout", b"o\n")]


def test_closing_the_generator_closes_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "c.log", rec(1, "stdout", "F", b"a"))
    gen = follow_logs(path, is_running=lambda: True, sleep=lambda s: None)
    assert next(gen) == line(1, "stdout", b"a\n")
    before = len(os.listdir("/proc/self/fd"))
    gen.close()
    assert len(os.listdir("/proc/self/fd")) == before - 1


def test_follow_with_a_writer_thread(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    done = threading.Event()
    expected: list[LogRecord] = []

    def writer() -> None:
        with path.open("ab", buffering=0) as f:
            for i in range(200):
                stream = "stderr" if i % 3 == 0 else "stdout"
                record = rec(2 * i, stream, "P", b"part%d-" % i) + rec(
                    2 * i + 1, stream, "F", b"end"
                )
                f.write(record[:30])  # writes land in pieces, as writev may
                f.write(record[30:])
                expected.append(line(2 * i + 1, stream, b"part%d-end\n" % i))
                if i % 50 == 0:
                    time.sleep(0.002)
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    out = list(
        follow_logs(path, is_running=lambda: not done.is_set(), poll=0.001, sleep=time.sleep)
    )
    thread.join()
    assert out == expected


def _lines_of(gen: Iterator[LogRecord]) -> list[bytes]:
    return [r.data for r in gen]


def test_follow_tail_zero_shows_only_new_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "c.log", rec(1, "stdout", "F", b"old"))
    script = Script(lambda: write(path, rec(2, "stdout", "F", b"new")))
    script.steps.append(script.stop)
    gen = follow_logs(path, tail=0, is_running=script.is_running, sleep=script.sleep)
    assert _lines_of(gen) == [b"new\n"]

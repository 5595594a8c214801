"""tarsafe against a corpus of hostile tars, and on legitimate layers.

Every hostile case asserts the layer is rejected and that nothing outside `dest`
changed: `dest` sits in a tmp dir beside an `outside` dir holding a canary, and the
whole tmp dir (minus `dest`) is compared before and after."""

from __future__ import annotations

import errno
import gzip
import io
import os
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.images.tarsafe import (
    DEFAULT_LIMITS,
    ExtractResult,
    Limits,
    extract_layer,
    extract_layer_atomically,
)
from api.errors import InvalidArgument

from .tars import (
    Entry,
    build,
    device,
    directory,
    fifo,
    file,
    hardlink,
    sha256,
    snapshot,
    symlink,
)

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(os.geteuid() != 0, reason="mknod, chown and trusted xattrs need root"),
]

ETC_CANARY = Path("/etc/pyswarm-tarsafe-canary")


@dataclass
class Sandbox:
    root: Path
    dest: Path
    outside: Path

    def extract(self, data: bytes, limits: Limits = DEFAULT_LIMITS) -> ExtractResult:
        with open(self._write(data), "rb") as stream:
            return extract_layer(stream, self.dest, limits=limits)

    def _write(self, data: bytes) -> Path:
        # the layer itself lives beside dest, so it is part of what must not change
        path = self.root / "layer.tar"
        path.write_bytes(data)
        return path


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    outside = tmp_path / "outside"
    (outside / "etc").mkdir(parents=True)
    (outside / "canary").write_bytes(b"canary")
    (outside / "etc" / "passwd").write_bytes(b"root:x:0:0::/root:/bin/sh\n")
    dest = tmp_path / "dest"
    dest.mkdir()
    return Sandbox(root=tmp_path, dest=dest, outside=outside)


def assert_rejected(
    sandbox: Sandbox, data: bytes, match: str, limits: Limits = DEFAULT_LIMITS
) -> None:
    sandbox._write(data)
    before = snapshot(sandbox.root, skip=sandbox.dest)
    with pytest.raises(InvalidArgument, match=match):
        sandbox.extract(data, limits)
    assert snapshot(sandbox.root, skip=sandbox.dest) == before
    assert not ETC_CANARY.exists()


# ---- the hostile corpus ------------------------------------------------------------

Case = Callable[[Path], list[Entry]]
ESCAPES = "escapes the root"
THROUGH_LINK = "goes through a symlink"

HOSTILE: dict[str, tuple[Case, str]] = {
    "dotdot": (lambda out: [file("../x", b"x")], ESCAPES),
    "dotdot nested": (lambda out: [file("a/../../x", b"x")], ESCAPES),
    "dotdot that stays inside": (lambda out: [file("a/../x", b"x")], ESCAPES),
    "dotdot to the canary": (lambda out: [file("../outside/canary", b"pwned")], ESCAPES),
    "symlink absolute, then write through": (
        lambda out: [symlink("a", str(out)), file("a/canary", b"pwned")],
        THROUGH_LINK,
    ),
    "symlink to /etc, then write through": (
        lambda out: [symlink("a", "/etc"), file(f"a/{ETC_CANARY.name}", b"pwned")],
        THROUGH_LINK,
    ),
    "symlink relative, then write through": (
        lambda out: [symlink("a", "../outside"), file("a/canary", b"pwned")],
        THROUGH_LINK,
    ),
    "symlink to dotdot, then write through": (
        lambda out: [symlink("a", ".."), file("a/outside/canary", b"pwned")],
        THROUGH_LINK,
    ),
    "symlink chain": (
        lambda out: [
            directory("d"),
            symlink("d/b", "../../outside"),
            symlink("a", "d/b"),
            file("a/new", b"pwned"),
        ],
        THROUGH_LINK,
    ),
    "symlink to a dir outside, then mkdir through": (
        lambda out: [symlink("a", str(out)), directory("a/newdir")],
        THROUGH_LINK,
    ),
    "symlink to a dir outside, then symlink through": (
        lambda out: [symlink("a", str(out)), symlink("a/evil", "/")],
        THROUGH_LINK,
    ),
    "symlink as the root": (lambda out: [symlink(".", str(out))], "replaces the root"),
    "file through a file": (lambda out: [file("f", b"x"), file("f/x", b"x")], THROUGH_LINK),
    "hardlink to /etc/passwd": (lambda out: [hardlink("p", "/etc/passwd")], "not found"),
    "hardlink to dotdot": (lambda out: [hardlink("p", "../outside/canary")], ESCAPES),
    "hardlink to an absolute outside path": (
        lambda out: [hardlink("p", str(out / "canary"))],
        "not found",
    ),
    "hardlink to a symlink": (
        lambda out: [symlink("s", str(out / "canary")), hardlink("h", "s")],
        "not a regular file",
    ),
    "hardlink through a symlinked dir": (
        lambda out: [symlink("d", str(out)), hardlink("h", "d/canary")],
        THROUGH_LINK,
    ),
    "hardlink to a directory": (
        lambda out: [directory("d"), hardlink("h", "d")],
        "not a regular file",
    ),
    "whiteout of dotdot": (lambda out: [file("a/.wh...")], "invalid whiteout"),
    "whiteout of dot": (lambda out: [file(".wh..")], "invalid whiteout"),
    "whiteout of nothing": (lambda out: [file("a/.wh.")], "invalid whiteout"),
    "whiteout above the root": (lambda out: [file("../.wh.canary")], ESCAPES),
    "whiteout through dotdot": (lambda out: [file("a/../../outside/.wh.canary")], ESCAPES),
    "whiteout under a symlinked dir": (
        lambda out: [symlink("d", str(out)), file("d/.wh.canary")],
        THROUGH_LINK,
    ),
    "opaque whiteout under a symlinked dir": (
        lambda out: [symlink("d", str(out)), file("d/.wh..wh..opq")],
        THROUGH_LINK,
    ),
    "empty name": (lambda out: [file("", b"x")], "invalid name"),
}


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("case", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_layer_is_rejected_and_writes_nothing_outside(
    sandbox: Sandbox, case: tuple[Case, str], compress: bool
) -> None:
    entries, match = case
    data = build(*entries(sandbox.outside), compress=compress)
    try:
        assert_rejected(sandbox, data, match)
    finally:
        ETC_CANARY.unlink(missing_ok=True)


def test_opaque_whiteout_under_a_symlinked_dir_sets_no_xattr_outside(sandbox: Sandbox) -> None:
    data = build(symlink("d", str(sandbox.outside)), file("d/.wh..wh..opq"))
    assert_rejected(sandbox, data, THROUGH_LINK)
    with pytest.raises(OSError) as raised:
        os.getxattr(sandbox.outside, "trusted.overlay.opaque")
    assert raised.value.errno == errno.ENODATA


def test_existing_symlink_is_replaced_not_written_through(sandbox: Sandbox) -> None:
    canary = sandbox.outside / "canary"
    sandbox.extract(build(symlink("a", str(canary)), file("a", b"new")))
    assert (sandbox.dest / "a").read_bytes() == b"new"
    assert not (sandbox.dest / "a").is_symlink()
    assert canary.read_bytes() == b"canary"


def test_dangling_symlink_to_outside_is_replaced_by_a_fifo_not_followed(sandbox: Sandbox) -> None:
    target = sandbox.outside / "made-by-layer"
    sandbox.extract(build(symlink("p", str(target)), fifo("p")))
    assert stat.S_ISFIFO((sandbox.dest / "p").lstat().st_mode)
    assert not target.exists()


# ---- caps ---------------------------------------------------------------------------


def test_too_many_entries(sandbox: Sandbox) -> None:
    data = build(*(file(f"f{i}", b"x") for i in range(10)))
    assert_rejected(sandbox, data, "maximum of 5 entries", Limits(max_entries=5))


def test_too_many_bytes_in_files(sandbox: Sandbox) -> None:
    data = build(file("a", b"x" * 6000), file("b", b"x" * 6000))
    assert_rejected(sandbox, data, "maximum of 10000 bytes", Limits(max_total_bytes=10_000))


def test_compression_bomb_after_the_tar_end_is_capped(sandbox: Sandbox) -> None:
    data = gzip.compress(build(file("a", b"x")) + bytes(8 << 20), mtime=0)
    assert len(data) < 64 << 10
    assert_rejected(sandbox, data, "maximum of 1048576 bytes", Limits(max_total_bytes=1 << 20))


def test_file_too_large(sandbox: Sandbox) -> None:
    data = build(file("big", b"x" * 200))
    assert_rejected(sandbox, data, "maximum file size of 100 bytes: big", Limits(max_file_size=100))


def test_path_too_long(sandbox: Sandbox) -> None:
    data = build(file("d/" + "n" * 60, b"x"))
    assert_rejected(sandbox, data, "maximum path length of 50", Limits(max_path_length=50))


def test_path_too_deep(sandbox: Sandbox) -> None:
    data = build(file("a/b/c/d", b"x"))
    assert_rejected(sandbox, data, "maximum path depth of 3", Limits(max_path_depth=3))


def test_symlink_target_too_long(sandbox: Sandbox) -> None:
    data = build(symlink("s", "t" * 60))
    assert_rejected(sandbox, data, "invalid target", Limits(max_path_length=50))


def test_truncated_member(sandbox: Sandbox) -> None:
    whole = build(file("a", b"x" * 4096))
    assert_rejected(sandbox, whole[: 512 * 3 + 100], "not a valid tar: unexpected end of data")


def test_truncated_gzip(sandbox: Sandbox) -> None:
    whole = build(file("a", os.urandom(8192)), compress=True)
    assert_rejected(sandbox, whole[: len(whole) // 2], "layer is corrupt")


def test_corrupt_gzip(sandbox: Sandbox) -> None:
    whole = bytearray(build(file("a", b"hello" * 1000), compress=True))
    whole[-6] ^= 0xFF  # the CRC
    assert_rejected(sandbox, bytes(whole), "layer is corrupt")


def test_not_a_tar(sandbox: Sandbox) -> None:
    assert_rejected(sandbox, b"\x01" * 1024, "not a valid tar")


# ---- legitimate layers --------------------------------------------------------------


def legit_layer() -> list[Entry]:
    return [
        directory("./", mode=0o755),
        directory("bin"),
        file("bin/busybox", b"\x7fELF", mode=0o4755),
        hardlink("bin/sh", "bin/busybox"),
        symlink("bin/ls", "busybox"),
        symlink("bin/abs", "/bin/busybox"),
        directory("tmp", mode=0o1777),
        directory("srv", mode=0o2775, uid=1000, gid=2000),
        file("srv/owned", b"data", mode=0o640, uid=1000, gid=2000),
        symlink("srv/link", "owned", uid=1000, gid=2000),
        file("/etc/absolute", b"inside"),
        file("./etc/dotted", b"dotted"),
        fifo("run/fifo", mode=0o620),
        device("dev/null"),
        device("dev/sda", tarfile.BLKTYPE, 8, 0),
        file("etc/.wh.passwd"),
        directory("var"),
        file("var/.wh..wh..opq"),
        file(".wh..wh.plnk"),
    ]


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_legit_layer_extracts_as_the_tar_says(sandbox: Sandbox, compress: bool) -> None:
    plain = build(*legit_layer())
    result = sandbox.extract(gzip.compress(plain) if compress else plain)
    dest = sandbox.dest

    assert result.diff_id == sha256(plain)
    assert result.entries == len(legit_layer())
    assert result.bytes == len(b"\x7fELF") + len(b"data") + len(b"inside") + len(b"dotted")
    assert [name for name, _ in result.skipped] == ["dev/null", "dev/sda", ".wh..wh.plnk"]

    assert stat.S_IMODE(dest.stat().st_mode) == 0o755
    busybox = (dest / "bin/busybox").stat()
    assert stat.S_IMODE(busybox.st_mode) == 0o4755
    assert (dest / "bin/sh").stat().st_ino == busybox.st_ino
    assert os.readlink(dest / "bin/ls") == "busybox"
    assert os.readlink(dest / "bin/abs") == "/bin/busybox"
    assert stat.S_IMODE((dest / "tmp").stat().st_mode) == 0o1777
    srv = (dest / "srv").stat()
    assert (stat.S_IMODE(srv.st_mode), srv.st_uid, srv.st_gid) == (0o2775, 1000, 2000)
    owned = (dest / "srv/owned").stat()
    assert (stat.S_IMODE(owned.st_mode), owned.st_uid, owned.st_gid) == (0o640, 1000, 2000)
    link = (dest / "srv/link").lstat()
    assert (link.st_uid, link.st_gid) == (1000, 2000)
    assert (dest / "etc/absolute").read_bytes() == b"inside"
    assert (dest / "etc/dotted").read_bytes() == b"dotted"
    fifo_stat = (dest / "run/fifo").lstat()
    assert stat.S_ISFIFO(fifo_stat.st_mode) and stat.S_IMODE(fifo_stat.st_mode) == 0o620
    assert not (dest / "dev/null").exists() and not (dest / "dev/sda").exists()


def test_whiteouts_become_overlayfs_whiteouts(sandbox: Sandbox) -> None:
    sandbox.extract(build(*legit_layer()))
    whiteout = (sandbox.dest / "etc/passwd").lstat()
    assert stat.S_ISCHR(whiteout.st_mode)
    assert os.major(whiteout.st_rdev) == 0 and os.minor(whiteout.st_rdev) == 0
    assert not (sandbox.dest / "etc/.wh.passwd").exists()
    assert os.getxattr(sandbox.dest / "var", "trusted.overlay.opaque") == b"y"
    assert not (sandbox.dest / "var/.wh..wh..opq").exists()


def test_mtimes_are_kept_for_files_and_directories(sandbox: Sandbox) -> None:
    sandbox.extract(build(directory("d"), file("d/f", b"x"), symlink("d/l", "f")))
    for name in ("d", "d/f", "d/l"):
        assert (sandbox.dest / name).lstat().st_mtime == 1_600_000_000


def test_only_safe_xattrs_are_restored(sandbox: Sandbox) -> None:
    entry = file("f", b"x")
    entry.info.pax_headers = {
        "SCHILY.xattr.user.note": "hello",
        "SCHILY.xattr.trusted.overlay.redirect": "/elsewhere",
    }
    sandbox.extract(build(entry))
    path = sandbox.dest / "f"
    assert os.getxattr(path, "user.note") == b"hello"
    assert "trusted.overlay.redirect" not in os.listxattr(path)


def test_later_entries_replace_earlier_ones(sandbox: Sandbox) -> None:
    sandbox.extract(
        build(
            directory("d", mode=0o700),
            file("d/kept", b"k"),
            directory("d", mode=0o755),
            directory("e"),
            file("e/gone", b"g"),
            file("e", b"now a file"),
            file("f", b"a file"),
            directory("f"),
            file("g", b"old"),
            file("g", b"new"),
        )
    )
    dest = sandbox.dest
    assert (dest / "d/kept").read_bytes() == b"k"
    assert stat.S_IMODE((dest / "d").stat().st_mode) == 0o755
    assert (dest / "e").read_bytes() == b"now a file"
    assert (dest / "f").is_dir()
    assert (dest / "g").read_bytes() == b"new"


def test_hardlink_to_an_absolute_name_inside_the_layer(sandbox: Sandbox) -> None:
    sandbox.extract(build(file("etc/passwd", b"root"), hardlink("copy", "/etc/passwd")))
    assert (sandbox.dest / "copy").stat().st_ino == (sandbox.dest / "etc/passwd").stat().st_ino
    assert (sandbox.outside / "etc/passwd").stat().st_nlink == 1


def test_diff_id_covers_bytes_after_the_end_marker(sandbox: Sandbox) -> None:
    plain = build(file("a", b"x")) + bytes(10_000)
    assert sandbox.extract(gzip.compress(plain)).diff_id == sha256(plain)


def test_missing_parents_are_created_0755(sandbox: Sandbox) -> None:
    old = os.umask(0o077)
    try:
        sandbox.extract(build(file("a/b/c", b"x")))
    finally:
        os.umask(old)
    assert stat.S_IMODE((sandbox.dest / "a/b").stat().st_mode) == 0o755


# ---- extract_layer_atomically --------------------------------------------------------


def test_atomic_extraction_renames_into_place(tmp_path: Path) -> None:
    data = build(file("f", b"x"))
    final = tmp_path / "layer"
    result = extract_layer_atomically(io.BytesIO(data), final, expected_diff_id=sha256(data))
    assert result.diff_id == sha256(data)
    assert (final / "f").read_bytes() == b"x"
    assert os.listdir(tmp_path) == ["layer"]


def test_atomic_extraction_leaves_nothing_on_a_bad_layer(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=ESCAPES):
        extract_layer_atomically(io.BytesIO(build(file("a", b"x"), file("../b"))), tmp_path / "l")
    assert os.listdir(tmp_path) == []


def test_atomic_extraction_refuses_another_diff_id(tmp_path: Path) -> None:
    data = build(file("f", b"x"))
    with pytest.raises(InvalidArgument, match="diff_id mismatch"):
        extract_layer_atomically(io.BytesIO(data), tmp_path / "l", expected_diff_id=sha256(b""))
    assert os.listdir(tmp_path) == []


def test_atomic_extraction_keeps_a_dir_that_appeared_meanwhile(tmp_path: Path) -> None:
    final = tmp_path / "layer"
    final.mkdir()
    (final / "theirs").write_bytes(b"t")
    extract_layer_atomically(io.BytesIO(build(file("ours", b"o"))), final)
    assert os.listdir(final) == ["theirs"]
    assert os.listdir(tmp_path) == ["layer"]

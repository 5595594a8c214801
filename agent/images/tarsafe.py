"""Unpacking layer tars safely: nothing a hostile tar says can write outside `dest`.

A layer becomes one overlayfs lowerdir, so an entry is applied the way the kernel will
read it: OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`) become overlayfs whiteouts (a 0/0
character device; the `trusted.overlay.opaque=y` xattr), device nodes are skipped (the
runtime provides /dev), everything else is created as the tar says.

How escapes are ruled out:
- Names are normalised (leading `/` and `./` dropped, as docker does); a `..` component
  anywhere rejects the whole layer.
- Every parent directory is opened one component at a time from a directory file
  descriptor with `O_DIRECTORY|O_NOFOLLOW` (missing ones created with `mkdir(dir_fd=)`),
  and the entry is created relative to that descriptor. No path string is ever resolved
  through the filesystem, so a symlink in the layer (`a -> /etc`, `a -> ..`) cannot be
  walked through: an entry below it fails the layer instead.
- Symlinks are created as given (absolute targets are normal in a rootfs) and never
  followed; files are opened `O_CREAT|O_EXCL|O_NOFOLLOW`; an existing entry is unlinked
  (or, for a directory over a directory, kept), never followed.
- Hardlink targets are normalised like names and must be regular files already inside
  `dest`, found by the same walk.
- Caps (`Limits`) bound entries, bytes, file size, path length and depth; the byte cap
  counts every uncompressed byte read, so a compression bomb stops there too.

The diff_id (sha256 of the uncompressed tar) is computed while reading; the bytes after
the tar's end marker are drained so that the digest covers the whole stream. On error,
`extract_layer` leaves `dest` for the caller to remove; `extract_layer_atomically`
extracts into a sibling temporary directory and renames it into place only on success.

    >>> with open("layer.tar.gz", "rb") as stream:
    ...     result = extract_layer_atomically(stream, Path("layers/abc"))
    >>> result.diff_id
    'sha256:...'
"""

from __future__ import annotations

import bz2
import contextlib
import enum
import errno
import gzip
import io
import lzma
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from api.errors import InvalidArgument

from .blobs import CHUNK, Digest, HashingReader, Readable, drain

WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
# Only these xattrs are restored from `SCHILY.xattr.*` PAX headers: a layer must never
# set `trusted.overlay.*` (redirects, metacopy) on what becomes an overlayfs lowerdir.
_XATTRS_RESTORED = ("security.capability", "user.")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Limits:
    max_entries: int = 1_000_000
    max_total_bytes: int = 64 << 30
    max_file_size: int = 64 << 30
    max_path_length: int = 4096
    max_path_depth: int = 1024


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class ExtractResult:
    diff_id: Digest
    entries: int
    bytes: int  # content bytes of the regular files written
    skipped: tuple[tuple[str, str], ...]  # (entry name, reason)


class Compression(enum.Enum):
    NONE = "tar"
    GZIP = "gzip"
    BZIP2 = "bzip2"
    XZ = "xz"
    ZSTD = "zstd"


_MAGIC = (
    (b"\x1f\x8b", Compression.GZIP),
    (b"BZh", Compression.BZIP2),
    (b"\xfd7zXZ\x00", Compression.XZ),
    (b"\x28\xb5\x2f\xfd", Compression.ZSTD),
)


def sniff(head: bytes) -> Compression:
    """The compression a stream starting with `head` (≥ 6 bytes if available) uses."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return Compression.NONE


def open_decompressed(stream: Readable, *, what: str = "layer") -> tuple[Compression, BinaryIO]:
    """The uncompressed bytes of `stream` (plain, gzip, bzip2 or xz, by magic bytes).

    Corrupt compressed data surfaces as InvalidArgument naming `what`."""
    head = _read_head(stream, 6)
    kind = sniff(head)
    raw = io.BufferedReader(_Source(head, stream, what=what), buffer_size=CHUNK)
    if kind is Compression.NONE:
        return kind, raw
    decoder: Readable
    if kind is Compression.GZIP:
        decoder = gzip.GzipFile(fileobj=raw, mode="rb")
    elif kind is Compression.BZIP2:
        decoder = bz2.BZ2File(raw)
    elif kind is Compression.XZ:
        decoder = lzma.LZMAFile(raw)  # noqa: SIM115
    else:
        raise InvalidArgument(f"{what} uses {kind.value} compression, which is not supported")
    return kind, io.BufferedReader(_Source(b"", decoder, what=what), buffer_size=CHUNK)


def extract_layer(
    stream: Readable, dest: Path, *, limits: Limits = DEFAULT_LIMITS
) -> ExtractResult:
    """Apply the layer tar `stream` to the empty directory `dest` (see the module doc)."""
    _, plain = open_decompressed(stream)
    hashing = HashingReader(plain, max_bytes=limits.max_total_bytes, what="layer")
    # Large buffers at every stage: the default 8 KiB ones cost a Python call per
    # few KiB of layer, which made unpacking the slow part of a pull.
    tar_stream = io.BufferedReader(hashing, buffer_size=CHUNK)
    root = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    extractor = _Extractor(root, limits)
    try:
        with _tar_errors(), tarfile.open(fileobj=tar_stream, mode="r|", bufsize=CHUNK) as tar:
            for member in iter_members(tar):
                extractor.add(member, tar)
            drain(tar_stream)
            drain(stream)
        extractor.finish()
    finally:
        extractor.close()
        os.close(root)
    return ExtractResult(
        diff_id=hashing.digest,
        entries=extractor.entries,
        bytes=extractor.bytes,
        skipped=tuple(extractor.skipped),
    )


def extract_layer_atomically(
    stream: Readable,
    final_dir: Path,
    *,
    limits: Limits = DEFAULT_LIMITS,
    expected_diff_id: Digest | None = None,
) -> ExtractResult:
    """Extract into a temporary sibling of `final_dir` and rename it into place.

    On failure (including a diff_id other than `expected_diff_id`) the temporary
    directory is removed and `final_dir` is untouched. If `final_dir` appeared in the
    meantime (another unpacker of the same layer won), it is kept and ours discarded.
    """
    temp = Path(tempfile.mkdtemp(prefix=f".tmp-{final_dir.name}-", dir=final_dir.parent))
    try:
        os.chmod(temp, 0o755)
        result = extract_layer(stream, temp, limits=limits)
        if expected_diff_id is not None and result.diff_id != expected_diff_id:
            raise InvalidArgument(
                f"layer diff_id mismatch: expected {expected_diff_id}, got {result.diff_id}"
            )
        _rename_dir(temp, final_dir)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return result


def _rename_dir(temp: Path, final: Path) -> None:
    try:
        os.rename(temp, final)
    except OSError as error:
        if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
        shutil.rmtree(temp)


class _Extractor:
    """Applies tar members one by one below the directory descriptor `root`."""

    def __init__(self, root: int, limits: Limits) -> None:
        self._root = root
        self._limits = limits
        self._as_root = os.geteuid() == 0
        self._dir_times: list[tuple[list[str], float]] = []
        self._cached: tuple[tuple[str, ...], int] | None = None
        self._cache_valid = False
        self.entries = 0
        self.bytes = 0
        self.skipped: list[tuple[str, str]] = []

    def add(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        self._count(member)
        parts = _split_name(member.name, self._limits)
        if not parts:
            self._root_entry(member)
            return
        self._add_at(self._parent(parts[:-1], entry=member.name), parts, member, tar)

    def close(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def _parent(self, parts: list[str], *, entry: str) -> int:
        """The directory an entry goes in, walked from the root (see `_walk`).

        The last one is kept open, since tars list a directory's entries together.
        A cached descriptor can only go stale if one of its path's components is
        removed, which happens only in `_clear`; that drops the cache."""
        key = tuple(parts)
        if self._cached is not None and self._cached[0] == key and self._cache_valid:
            return self._cached[1]
        fd = self._walk(parts, entry=entry, create=True)
        self.close()
        self._cached, self._cache_valid = (key, fd), True
        return fd

    def finish(self) -> None:
        """Set directory mtimes last: creating entries inside changed them (best effort)."""
        for parts, mtime in self._dir_times:
            with contextlib.suppress(OSError, InvalidArgument):
                fd = self._walk(parts, entry="", create=False)
                try:
                    _set_mtime(fd, mtime)
                finally:
                    os.close(fd)

    def _count(self, member: tarfile.TarInfo) -> None:
        limits = self._limits
        self.entries += 1
        if self.entries > limits.max_entries:
            raise InvalidArgument(f"layer exceeds the maximum of {limits.max_entries} entries")
        if member.isreg():
            if member.size > limits.max_file_size:
                raise InvalidArgument(
                    f"layer exceeds the maximum file size of {limits.max_file_size} bytes: "
                    f"{_show(member.name)}"
                )
            self.bytes += member.size
            if self.bytes > limits.max_total_bytes:
                raise InvalidArgument(
                    f"layer exceeds the maximum of {limits.max_total_bytes} bytes"
                )

    def _add_at(
        self, parent: int, parts: list[str], member: tarfile.TarInfo, tar: tarfile.TarFile
    ) -> None:
        name = parts[-1]
        if name.startswith(WHITEOUT_PREFIX):
            self._whiteout(parent, name, member)
        elif member.isdir():
            self._directory(parent, parts, member)
        elif member.isreg():
            self._file(parent, name, member, tar)
        elif member.issym():
            self._symlink(parent, name, member)
        elif member.islnk():
            self._hardlink(parent, parts, member)
        elif member.isfifo():
            self._fifo(parent, name, member)
        elif member.ischr() or member.isblk():
            self.skipped.append((member.name, "device node (the runtime provides /dev)"))
        else:
            self.skipped.append((member.name, f"unsupported entry type {member.type!r}"))

    def _walk(self, parts: list[str], *, entry: str, create: bool) -> int:
        """A descriptor of the directory `parts` below the root, never following links."""
        fd = os.open(".", _DIR_FLAGS, dir_fd=self._root)
        try:
            for name in parts:
                if name in (".", "..") or "/" in name:  # _split_name rules these out already
                    raise InvalidArgument(f"layer entry escapes the root: {_show(entry)}")
                child = self._open_dir(fd, name, entry=entry, create=create)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open_dir(self, parent: int, name: str, *, entry: str, create: bool) -> int:
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise InvalidArgument(f"layer entry not found: {_show(entry)}") from None
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENOTDIR):
                raise InvalidArgument(
                    f"layer entry goes through a symlink or a non-directory: {_show(entry)}"
                ) from None
            raise
        os.mkdir(name, 0o755, dir_fd=parent)
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        os.fchmod(fd, 0o755)
        return fd

    def _clear(self, parent: int, name: str, *, keep_dir: bool) -> bool:
        """Remove what is at `name` (never following it); True if a directory was kept."""
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode) and keep_dir:
            return True
        self._cache_valid = False  # `parent` stays open for the caller
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=parent)
        else:
            os.unlink(name, dir_fd=parent)
        return False

    def _root_entry(self, member: tarfile.TarInfo) -> None:
        if not member.isdir():
            raise InvalidArgument(f"layer entry replaces the root: {_show(member.name)}")
        self._set_metadata(self._root, member)
        self._dir_times.append(([], member.mtime))

    def _directory(self, parent: int, parts: list[str], member: tarfile.TarInfo) -> None:
        name = parts[-1]
        if not self._clear(parent, name, keep_dir=True):
            os.mkdir(name, 0o700, dir_fd=parent)
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        try:
            self._set_metadata(fd, member)
        finally:
            os.close(fd)
        self._dir_times.append((parts, member.mtime))

    def _file(self, parent: int, name: str, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        source = tar.extractfile(member)
        if source is None:
            raise InvalidArgument(f"layer entry has no data: {_show(member.name)}")
        self._clear(parent, name, keep_dir=False)
        fd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=parent)
        try:
            _copy(source, fd)
            self._set_metadata(fd, member)
            _set_mtime(fd, member.mtime)
        finally:
            os.close(fd)

    def _symlink(self, parent: int, name: str, member: tarfile.TarInfo) -> None:
        target = member.linkname
        if not target or "\x00" in target or len(target) > self._limits.max_path_length:
            raise InvalidArgument(f"layer symlink has an invalid target: {_show(member.name)}")
        self._clear(parent, name, keep_dir=False)
        os.symlink(target, name, dir_fd=parent)
        self._set_link_metadata(parent, name, member)

    def _hardlink(self, parent: int, parts: list[str], member: tarfile.TarInfo) -> None:
        shown = f"{_show(member.name)} -> {_show(member.linkname)}"
        target = _split_name(member.linkname, self._limits)
        if not target:
            raise InvalidArgument(f"layer hardlink target is not a regular file: {shown}")
        if target == parts:
            return
        source_dir = self._walk(target[:-1], entry=shown, create=False)
        try:
            try:
                st = os.stat(target[-1], dir_fd=source_dir, follow_symlinks=False)
            except FileNotFoundError:
                raise InvalidArgument(f"layer hardlink target not found: {shown}") from None
            if not stat.S_ISREG(st.st_mode):
                raise InvalidArgument(f"layer hardlink target is not a regular file: {shown}")
            self._clear(parent, parts[-1], keep_dir=False)
            try:
                os.link(
                    target[-1],
                    parts[-1],
                    src_dir_fd=source_dir,
                    dst_dir_fd=parent,
                    follow_symlinks=False,
                )
            except FileNotFoundError:
                raise InvalidArgument(f"layer hardlink target not found: {shown}") from None
        finally:
            os.close(source_dir)

    def _fifo(self, parent: int, name: str, member: tarfile.TarInfo) -> None:
        self._clear(parent, name, keep_dir=False)
        os.mkfifo(name, 0o600, dir_fd=parent)
        self._set_link_metadata(parent, name, member)
        # chmod has no no-follow form on Linux; `name` is the FIFO made just above in a
        # directory nothing else writes to, so there is nothing to follow.
        os.chmod(name, member.mode & 0o7777, dir_fd=parent)

    def _whiteout(self, parent: int, name: str, member: tarfile.TarInfo) -> None:
        if name == OPAQUE_WHITEOUT:
            os.setxattr(parent, OPAQUE_XATTR, b"y")
            return
        if name.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            self.skipped.append((member.name, "aufs metadata"))
            return
        hidden = name[len(WHITEOUT_PREFIX) :]
        if hidden in ("", ".", ".."):
            raise InvalidArgument(f"layer has an invalid whiteout: {_show(member.name)}")
        self._clear(parent, hidden, keep_dir=False)
        os.mknod(hidden, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=parent)

    def _set_metadata(self, fd: int, member: tarfile.TarInfo) -> None:
        # Order matters: chown clears setuid/setgid and file capabilities, so the mode
        # and the xattrs come after it.
        if self._as_root:
            os.fchown(fd, member.uid, member.gid)
        os.fchmod(fd, member.mode & 0o7777)
        if self._as_root:
            for key, value in _xattrs(member):
                os.setxattr(fd, key, value)

    def _set_link_metadata(self, parent: int, name: str, member: tarfile.TarInfo) -> None:
        if self._as_root:
            os.chown(name, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        with contextlib.suppress(OverflowError, ValueError):
            ns = int(member.mtime * 1_000_000_000)
            os.utime(name, ns=(ns, ns), dir_fd=parent, follow_symlinks=False)


class _Source(io.RawIOBase):
    """`prefix`, then `source`; a decoder's complaints about its input become
    InvalidArgument (an OSError with an errno is a real I/O error and stays one)."""

    def __init__(self, prefix: bytes, source: Readable, *, what: str) -> None:
        super().__init__()
        self._prefix = prefix
        self._source = source
        self._what = what

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._prefix:
            data, self._prefix = self._prefix[: len(buffer)], self._prefix[len(buffer) :]
        else:
            data = self._read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _read(self, size: int) -> bytes:
        try:
            return self._source.read(size)
        except (EOFError, zlib.error, lzma.LZMAError) as error:
            raise InvalidArgument(f"{self._what} is corrupt: {error}") from None
        except OSError as error:
            if error.errno is not None:
                raise
            raise InvalidArgument(f"{self._what} is corrupt: {error}") from None


@contextlib.contextmanager
def _tar_errors() -> Iterator[None]:
    try:
        yield
    except tarfile.TarError as error:
        raise InvalidArgument(f"layer is not a valid tar: {error}") from None


def iter_members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The members of a streaming TarFile, without keeping them all in memory."""
    while (member := tar.next()) is not None:
        # A streaming TarFile keeps every header it read; we never look back, and a
        # layer may have a million entries.
        tar.members.clear()  # type: ignore[attr-defined]  # (undocumented, untyped)
        yield member


def _split_name(name: str, limits: Limits) -> list[str]:
    """The components of an entry name below the root; [] is the root itself."""
    if not name or "\x00" in name:
        raise InvalidArgument(f"layer entry has an invalid name: {name!r}")
    if len(os.fsencode(name)) > limits.max_path_length:
        raise InvalidArgument(
            f"layer exceeds the maximum path length of {limits.max_path_length}: {_show(name)}"
        )
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(f"layer entry escapes the root: {_show(name)}")
    if len(parts) > limits.max_path_depth:
        raise InvalidArgument(
            f"layer exceeds the maximum path depth of {limits.max_path_depth}: {_show(name)}"
        )
    return parts


def _xattrs(member: tarfile.TarInfo) -> Iterator[tuple[str, bytes]]:
    for key, value in member.pax_headers.items():
        name = key.removeprefix("SCHILY.xattr.")
        if name != key and name.startswith(_XATTRS_RESTORED):
            yield name, value.encode("utf-8", "surrogateescape")


def _copy(source: Readable, fd: int) -> None:
    while chunk := source.read(CHUNK):
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]


def _set_mtime(fd: int, mtime: float) -> None:
    with contextlib.suppress(OverflowError, ValueError):
        ns = int(mtime * 1_000_000_000)
        os.utime(fd, ns=(ns, ns))


def _read_head(stream: Readable, size: int) -> bytes:
    head = b""
    while len(head) < size and (chunk := stream.read(size - len(head))):
        head += chunk
    return head


def _show(name: str) -> str:
    return name if len(name) <= 200 else name[:200] + "..."

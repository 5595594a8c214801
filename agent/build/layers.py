"""Layer tars for builds: from an overlayfs upper dir (RUN) and from COPY/ADD sources.

- `upper_dir_tar`: a container's writable layer as an OCI layer. overlayfs marks a
  deletion with a 0/0 character device (→ an empty `.wh.NAME` entry) and a directory
  that replaces a lower one with `trusted.overlay.opaque=y` (→ the directory, then
  `DIR/.wh..wh..opq`). Empty mount-point files the runtime made for /etc/hosts,
  /etc/hostname and /etc/resolv.conf are left out: they belong to the container, not
  to the image (docker keeps them in its "init" layer for the same reason).
- `copy_tar`: the entries a COPY/ADD plans (`Entry`): directories it must create, and
  trees copied from a source, owned by root or by `--chown`.
- `sources_digest`: what the cache key knows of COPY sources (names, types, modes,
  owners, contents, link targets; not times, as docker).
- `store_layer`: streams a tar producer through `Lease.put_layer`, so the tar, its
  gzip, the diff_id and the blob digest are made in one pass with no temporary file;
  a failing producer leaves only a blob the lease collects.

Tars are written in sorted order with names relative to `/`, uid/gid numeric and no
user or group names, so the same content makes the same layer.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from api.errors import EngineFailure

from ..images.blobs import Descriptor, Digest
from ..images.lease import Lease

WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
REDIRECT_XATTR = "trusted.overlay.redirect"
METACOPY_XATTR = "trusted.overlay.metacopy"
MOUNT_POINT_FILES = frozenset({"etc/hosts", "etc/hostname", "etc/resolv.conf"})
_KEPT_XATTRS = ("security.capability", "user.")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Entry:
    """One thing a COPY/ADD layer holds at `name` (relative to `/`): a directory made
    with `mode`/`owner` (`source` None), or the tree at `source` copied there, owned
    by `owner` (None: as the source is, for extracted archives)."""

    name: str
    source: Path | None = None
    mode: int = 0o755
    owner: tuple[int, int] | None = (0, 0)
    mtime: float = 0.0


# ---- RUN: upper dir -> layer ------------------------------------------------------


def upper_dir_tar(upper: Path, out: BinaryIO) -> None:
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        links: dict[tuple[int, int], str] = {}
        for rel, st in _walk(upper, ""):
            path = upper / rel
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                tar.addfile(_whiteout(rel))
                continue
            if rel in MOUNT_POINT_FILES and stat.S_ISREG(st.st_mode) and st.st_size == 0:
                continue
            _refuse_redirects(path, rel)
            _add(tar, path, rel, st, owner=None, links=links)
            if stat.S_ISDIR(st.st_mode) and _xattr(path, OPAQUE_XATTR) == b"y":
                tar.addfile(_whiteout(f"{rel}/{OPAQUE_WHITEOUT}", opaque=True))


def _refuse_redirects(path: Path, rel: str) -> None:
    """With overlayfs's redirect_dir or metacopy on (off by default), an upper entry
    may stand for content left in a lower layer; a layer made from it would lose
    that content, so the build fails instead."""
    for name in (REDIRECT_XATTR, METACOPY_XATTR):
        if _xattr(path, name) is not None:
            raise EngineFailure(
                f"cannot make a layer of /{rel}: overlayfs {name.rsplit('.', 1)[1]} is in use "
                "(mount overlay with redirect_dir=off,metacopy=off for builds)"
            )


def _whiteout(rel: str, *, opaque: bool = False) -> tarfile.TarInfo:
    head, _, name = rel.rpartition("/")
    info = tarfile.TarInfo(rel if opaque else (f"{head}/" if head else "") + WHITEOUT_PREFIX + name)
    info.mode = 0o644
    return info


def _walk(root: Path, prefix: str) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, lstat) of everything below `root`, sorted, parents first."""
    with os.scandir(root / prefix if prefix else root) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        rel = f"{prefix}/{entry.name}" if prefix else entry.name
        st = entry.stat(follow_symlinks=False)
        yield rel, st
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(root, rel)


def _xattr(path: Path, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None


# ---- tar entries ------------------------------------------------------------------


def _info(rel: str, st: os.stat_result, owner: tuple[int, int] | None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(rel)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = owner if owner is not None else (st.st_uid, st.st_gid)
    info.mtime = int(st.st_mtime)
    info.uname = info.gname = ""
    return info


def _add(
    tar: tarfile.TarFile,
    path: Path,
    rel: str,
    st: os.stat_result,
    *,
    owner: tuple[int, int] | None,
    links: dict[tuple[int, int], str],
) -> None:
    info = _info(rel, st, owner)
    info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in _kept_xattrs(path)}
    mode = st.st_mode
    if stat.S_ISREG(mode) and st.st_nlink > 1 and (st.st_dev, st.st_ino) in links:
        info.type = tarfile.LNKTYPE
        info.linkname = links[(st.st_dev, st.st_ino)]
        tar.addfile(info)
    elif stat.S_ISREG(mode):
        if st.st_nlink > 1:
            links[(st.st_dev, st.st_ino)] = rel
        info.size = st.st_size
        with open(path, "rb") as f:
            tar.addfile(info, f)
    elif stat.S_ISDIR(mode):
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    elif stat.S_ISLNK(mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(path)
        tar.addfile(info)
    elif stat.S_ISFIFO(mode):
        info.type = tarfile.FIFOTYPE
        tar.addfile(info)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        tar.addfile(info)
    # sockets are not carried in layers, as docker


def _kept_xattrs(path: Path) -> Iterator[tuple[str, str]]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return
    for name in sorted(names):
        if name.startswith(_KEPT_XATTRS):
            value = _xattr(path, name)
            if value is not None:
                yield name, value.decode("utf-8", "surrogateescape")


# ---- COPY/ADD ---------------------------------------------------------------------


def copy_tar(entries: Sequence[Entry], out: BinaryIO) -> None:
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        links: dict[tuple[int, int], str] = {}
        seen: set[str] = set()
        for entry in entries:
            for rel, path, st, owner in _expand(entry):
                if rel in seen:
                    continue
                seen.add(rel)
                if path is None:
                    info = tarfile.TarInfo(rel)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, entry.mode, int(entry.mtime)
                    info.uid, info.gid = owner or (0, 0)
                    tar.addfile(info)
                else:
                    _add(tar, path, rel, st, owner=owner, links=links)


def _expand(
    entry: Entry,
) -> Iterator[tuple[str, Path | None, os.stat_result, tuple[int, int] | None]]:
    """The tar entries of one `Entry`: (name, host path or None, lstat, owner)."""
    if entry.source is None:
        yield entry.name, None, os.stat_result((0,) * 10), entry.owner
        return
    st = os.lstat(entry.source)
    if not stat.S_ISDIR(st.st_mode):
        yield entry.name, entry.source, st, entry.owner
        return
    if entry.name:
        yield entry.name, entry.source, st, entry.owner
    for rel, child in _walk(entry.source, ""):
        if stat.S_ISCHR(child.st_mode) and child.st_rdev == 0:
            continue  # an overlay whiteout in an unpacked archive: nothing to copy
        name = f"{entry.name}/{rel}" if entry.name else rel
        yield name, entry.source / rel, child, entry.owner


def sources_digest(entries: Sequence[Entry]) -> str:
    """sha256 over what the COPY would put in its layer, times left out."""
    digest = hashlib.sha256()
    for entry in entries:
        for rel, path, st, owner in _expand(entry):
            digest.update(f"{rel}\0{st.st_mode:o}\0{owner}\0".encode())
            if path is None:
                continue
            if stat.S_ISREG(st.st_mode):
                digest.update(_file_digest(path))
            elif stat.S_ISLNK(st.st_mode):
                digest.update(os.readlink(path).encode())
            digest.update(b"\n")
    return "sha256:" + digest.hexdigest()


def _file_digest(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.digest()


# ---- into the blob store ------------------------------------------------------------


def store_layer(lease: Lease, produce: Callable[[BinaryIO], None]) -> tuple[Descriptor, Digest]:
    """Run `produce(out)` in a thread writing a tar into a pipe that `put_layer` reads;
    → (blob, diff_id). The producer's error is raised after the blob it truncated
    was written; the caller's lease collects that blob."""
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            with os.fdopen(write_fd, "wb") as out:
                produce(out)
        except BrokenPipeError:
            pass  # the reader failed; its error is the one raised
        except BaseException as error:
            failure.append(error)

    thread = threading.Thread(target=run, name="build-layer", daemon=True)
    thread.start()
    try:
        with os.fdopen(read_fd, "rb") as stream:
            result = lease.put_layer(stream)
    finally:
        thread.join()
    if failure:
        raise failure[0]
    return result

"""Crafting tars for the image tests: any name, type, link target or size a hostile
archive could carry, built in memory with tarfile."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

from agent.images.blobs import Digest


@dataclass
class Entry:
    info: tarfile.TarInfo
    data: bytes | None = None


def _info(name: str, kind: bytes, *, mode: int, uid: int = 0, gid: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.mtime = 1_600_000_000
    return info


def file(name: str, data: bytes = b"", *, mode: int = 0o644, **owner: int) -> Entry:
    info = _info(name, tarfile.REGTYPE, mode=mode, **owner)
    info.size = len(data)
    return Entry(info, data)


def directory(name: str, *, mode: int = 0o755, **owner: int) -> Entry:
    return Entry(_info(name, tarfile.DIRTYPE, mode=mode, **owner))


def symlink(name: str, target: str, **owner: int) -> Entry:
    info = _info(name, tarfile.SYMTYPE, mode=0o777, **owner)
    info.linkname = target
    return Entry(info)


def hardlink(name: str, target: str) -> Entry:
    info = _info(name, tarfile.LNKTYPE, mode=0o644)
    info.linkname = target
    return Entry(info)


def device(name: str, kind: bytes = tarfile.CHRTYPE, major: int = 1, minor: int = 3) -> Entry:
    info = _info(name, kind, mode=0o666)
    info.devmajor, info.devminor = major, minor
    return Entry(info)


def fifo(name: str, *, mode: int = 0o600) -> Entry:
    return Entry(_info(name, tarfile.FIFOTYPE, mode=mode))


def build(*entries: Entry, compress: bool = False) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            tar.addfile(entry.info, io.BytesIO(entry.data) if entry.data is not None else None)
    data = out.getvalue()
    return gzip.compress(data, mtime=0) if compress else data


def sha256(data: bytes) -> Digest:
    return Digest("sha256:" + hashlib.sha256(data).hexdigest())


def rootfs(*extra: Entry, compress: bool = False) -> bytes:
    """A tiny rootfs: /bin/sh (a script), /etc/hostname, a symlink and a setuid file."""
    return build(
        directory("./"),
        directory("bin"),
        file("bin/sh", b"#!/bin/true\n", mode=0o755),
        symlink("bin/ash", "sh"),
        file("bin/su", b"su", mode=0o4755),
        directory("etc"),
        file("etc/hostname", b"box\n"),
        *extra,
        compress=compress,
    )


def snapshot(root: Path, *, skip: Path | None = None) -> dict[str, tuple[int, int, bytes]]:
    """Every entry below `root` except `skip`: (mode, size, content of regular files)."""
    seen: dict[str, tuple[int, int, bytes]] = {}
    for directory, dirs, files in os.walk(root):
        if skip is not None:
            dirs[:] = [d for d in dirs if Path(directory, d) != skip]
        for name in dirs + files:
            path = Path(directory, name)
            st = path.lstat()
            content = path.read_bytes() if stat.S_ISREG(st.st_mode) else b""
            seen[str(path.relative_to(root))] = (st.st_mode, st.st_size, content)
    return seen

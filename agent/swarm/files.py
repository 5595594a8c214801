"""Secrets and configs of a task as files on a tmpfs of its own, bind-mounted read-only.

Layout: `<data-root>/swarm/files/<task id>/` is a tmpfs (mode 0700, sized to the data)
holding one file per reference, named by its position (`secret-0`, `config-1`) so the
same secret can be mounted at two targets. Secrets appear at `/run/secrets/<target>`
(target defaults to the secret's name; an absolute target is used as is), configs at
their absolute target (default `/<name>`). Files carry the reference's uid, gid and
mode (0 = 0444). Secret data never touches a disk.

`plan(task)` is the pure part (paths, modes); `TaskFiles` mounts, writes and cleans up.
A failure halfway unmounts and removes what it made, so no mount is ever orphaned.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import posixpath
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from api import engine_pb2
from api import objects_pb2 as objects

from ..containers import rootfs
from .exec import RejectedError

SECRETS_DIR = "/run/secrets"
DEFAULT_MODE = 0o444
MIN_SIZE = 1 << 20  # a tmpfs page per file and headroom; far below any memory limit

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class PlannedFile:
    kind: str  # secret | config
    ref: objects.FileReference
    filename: str  # in the task's tmpfs
    target: str  # absolute path in the container

    @property
    def mode(self) -> int:
        return self.ref.mode or DEFAULT_MODE


def secret_target(ref: objects.FileReference) -> str:
    target = ref.target or ref.name
    return target if target.startswith("/") else posixpath.join(SECRETS_DIR, target)


def config_target(ref: objects.FileReference) -> str:
    target = ref.target or ref.name
    return target if target.startswith("/") else "/" + target


def plan(task: objects.Task) -> list[PlannedFile]:
    spec = task.spec.container
    out = [
        PlannedFile("secret", ref, f"secret-{i}", secret_target(ref))
        for i, ref in enumerate(spec.secrets)
    ]
    out += [
        PlannedFile("config", ref, f"config-{i}", config_target(ref))
        for i, ref in enumerate(spec.configs)
    ]
    for f in out:
        # ".." would let a task's file land outside where the user asked for it.
        if ".." in f.target.split("/") or posixpath.normpath(f.target) in ("/", SECRETS_DIR):
            raise RejectedError(f"invalid {f.kind} target: {f.ref.target or f.ref.name}")
    return out


def files_root(data_root: Path) -> Path:
    return data_root / "swarm" / "files"


class TaskFiles:
    def __init__(self, root: Path, task_id: str) -> None:
        self.dir = root / task_id

    def create(
        self, planned: list[PlannedFile], *, data: Callable[[PlannedFile], bytes]
    ) -> list[engine_pb2.Mount]:
        """Mount the tmpfs, write the files, return the container's bind mounts."""
        if not planned:
            return []
        self.cleanup()  # what an interrupted earlier attempt may have left
        try:
            contents = [(f, data(f)) for f in planned]
            size = max(MIN_SIZE, 2 * sum(len(b) + 4096 for _, b in contents))
            self.dir.mkdir(parents=True, mode=0o700)
            _mount_tmpfs(self.dir, size=size)
            for f, content in contents:
                _write(self.dir / f.filename, content, uid=f.ref.uid, gid=f.ref.gid, mode=f.mode)
        except BaseException:
            self.cleanup()
            raise
        return [
            engine_pb2.Mount(
                type="bind", source=str(self.dir / f.filename), target=f.target, read_only=True
            )
            for f in planned
        ]

    def cleanup(self) -> None:
        """Unmount and remove; idempotent."""
        with contextlib.suppress(FileNotFoundError):
            rootfs.unmount(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)


def _mount_tmpfs(target: Path, *, size: int) -> None:
    options = f"mode=0700,size={size}".encode()
    flags = 0x2 | 0x8 | 0x4  # MS_NOSUID | MS_NOEXEC | MS_NODEV
    if _libc.mount(b"tmpfs", str(target).encode(), b"tmpfs", flags, options) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mounting a tmpfs at {target}: {os.strerror(err)}")


def _write(path: Path, content: bytes, *, uid: int, gid: int, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, content)
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)  # after chown, which clears set-id bits
    finally:
        os.close(fd)

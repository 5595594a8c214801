"""A container's root filesystem: an overlayfs mount, and lookups inside it.

The image's unpacked layers are the lowerdirs (top layer first), the container's
writable layer is `upper/` (with `work/`), mounted on `bundle/rootfs` when the
container starts and unmounted when it stops; `upper/` lives until the container
is removed, as docker's writable layer does.

Lookups (the command's path, the user's uid) resolve symlinks themselves and never
leave the root: an absolute symlink target means the container's root, `..` stops
at it. So a hostile image cannot make the daemon read host files.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from api.errors import CommandNotExecutable, CommandNotFound, EngineFailure, InvalidArgument

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
MNT_DETACH = 2
MAX_SYMLINKS = 40


def mount_overlay(*, lowers: Sequence[Path], upper: Path, work: Path, target: Path) -> None:
    if not lowers:
        raise EngineFailure("image has no layers")
    # overlayfs wants the topmost lower layer first.
    lowerdir = ":".join(str(p) for p in reversed(lowers))
    options = f"lowerdir={lowerdir},upperdir={upper},workdir={work}"
    if len(options) > 4000:
        raise EngineFailure(f"too many image layers to mount ({len(lowers)})")
    res = _libc.mount(b"overlay", str(target).encode(), b"overlay", 0, options.encode())
    if res != 0:
        err = ctypes.get_errno()
        raise EngineFailure(f"mounting the container's root filesystem: {os.strerror(err)}")


def unmount(target: Path) -> None:
    """Lazy-unmount `target` if something is mounted there; idempotent."""
    if not is_mountpoint(target):
        return
    if _libc.umount2(str(target).encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise EngineFailure(f"unmounting {target}: {os.strerror(err)}")


def is_mountpoint(path: Path) -> bool:
    text = str(path)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return any(line.split()[4] == text for line in f)


def resolve_in_root(root: Path, path: str) -> Path:
    """Host path of `path` inside the container root, following symlinks within it."""
    parts = list(PurePosixPath("/", path).parts[1:])
    resolved: list[str] = []
    hops = 0
    while parts:
        name = parts.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, name)
        if candidate.is_symlink():
            hops += 1
            if hops > MAX_SYMLINKS:
                raise InvalidArgument(f"too many levels of symbolic links: {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = list(PurePosixPath(target).parts) + parts
            if parts and parts[0] == "/":
                parts.pop(0)
            continue
        resolved.append(name)
    return root.joinpath(*resolved)


def find_executable(root: Path, argv0: str, *, path_env: str, cwd: str) -> str:
    """Docker's exec lookup, raising the 127/126 errors `run` turns into exit codes."""
    if "/" in argv0:
        full = argv0 if argv0.startswith("/") else str(PurePosixPath(cwd or "/", argv0))
        _check_executable(resolve_in_root(root, full), argv0)
        return argv0
    for directory in path_env.split(":"):
        if not directory:
            continue
        host = resolve_in_root(root, f"{directory}/{argv0}")
        if host.is_file() and os.access(host, os.X_OK):
            return f"{directory.rstrip('/')}/{argv0}"
    raise CommandNotFound(f'exec: "{argv0}": executable file not found in $PATH')


def _check_executable(host: Path, argv0: str) -> None:
    try:
        st = host.stat()
    except FileNotFoundError:
        raise CommandNotFound(f'exec: "{argv0}": stat {argv0}: no such file or directory') from None
    if stat.S_ISDIR(st.st_mode) or not st.st_mode & 0o111:
        raise CommandNotExecutable(f'exec: "{argv0}": permission denied')


@dataclass(frozen=True)
class User:
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()
    home: str = "/"


def _read_db(root: Path, name: str) -> list[list[str]]:
    try:
        text = resolve_in_root(root, f"/etc/{name}").read_text(errors="replace")
    except OSError:
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def resolve_user(root: Path, spec: str) -> User:
    """`-u name|uid[:group|gid]` looked up in the image's /etc/passwd and /etc/group."""
    user_part, _, group_part = (spec or "0").partition(":")
    passwd = _read_db(root, "passwd")
    entry = next((e for e in passwd if len(e) >= 6 and user_part in (e[0], e[2])), None)
    if entry is not None:
        uid, gid, home = int(entry[2]), int(entry[3]), entry[5]
    elif user_part.isdigit():
        uid, gid, home = int(user_part), 0, "/"
    else:
        raise InvalidArgument(
            f"unable to find user {user_part}: no matching entries in passwd file"
        )
    groups = _read_db(root, "group")
    if group_part:
        group = next((g for g in groups if len(g) >= 3 and group_part in (g[0], g[2])), None)
        if group is not None:
            gid = int(group[2])
        elif group_part.isdigit():
            gid = int(group_part)
        else:
            raise InvalidArgument(
                f"unable to find group {group_part}: no matching entries in group file"
            )
    name = entry[0] if entry else None
    extra = tuple(
        int(g[2])
        for g in groups
        if len(g) >= 4 and name and name in g[3].split(",") and g[2].isdigit()
    )
    return User(uid=uid, gid=gid, additional_gids=extra, home=home)

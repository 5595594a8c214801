"""Local volumes, laid out as docker's: `<root>/<name>/_data` plus `<root>/<name>/meta.json`.

A volume is a directory the engine bind-mounts into containers; `meta.json` keeps what
docker keeps (creation time, labels) and whether it is anonymous (created for a
container's `-v /path` or an image VOLUME, with a 64-hex random name). Docker 23+
`volume prune` removes anonymous volumes only unless asked for all; so does `prune`.

Invariants:
- A volume exists once `<root>/<name>` exists, and then it is whole: `create` builds it
  under a hidden temporary name (`.tmp-*`) and renames it into place; a failed create
  leaves nothing. Removal renames it to `.trash-*` first, then deletes the data outside
  the lock, so a volume never shows half deleted. Leftovers of a crash are cleared when
  the store opens. Names starting with "." are never volume names, so the hidden
  entries cannot clash.
- Names follow docker's rule `[a-zA-Z0-9][a-zA-Z0-9_.-]+`, which also keeps `/` and `..`
  out of paths; a name that breaks it is never looked up on disk.
- One lock serializes create/remove/prune, so "in use" checks and removals do not race
  each other. `users(name)` (the engine's containers using a volume) is called under
  it: it must not call back into the store.

Usage:

    store = VolumeStore(data_root / "volumes")
    vol = store.create("pgdata", labels={"app": "db"})
    store.remove("pgdata", force=False, users=engine.volume_users)
"""

from __future__ import annotations

import builtins
import json
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from api import engine_pb2
from api.errors import Conflict, InvalidArgument, NotFound

NAME_CHARS = "[a-zA-Z0-9][a-zA-Z0-9_.-]"
_NAME = re.compile(NAME_CHARS + "+")
DATA_DIR = "_data"
META_FILE = "meta.json"
_TMP = ".tmp-"
_TRASH = ".trash-"

Users = Callable[[str], Sequence[str]]


@dataclass(frozen=True)
class Volume:
    name: str
    mountpoint: Path
    created: int  # unix seconds
    labels: Mapping[str, str] = field(default_factory=dict)
    anonymous: bool = False
    driver: str = "local"

    def to_proto(self) -> engine_pb2.Volume:
        return engine_pb2.Volume(
            name=self.name,
            driver=self.driver,
            mountpoint=str(self.mountpoint),
            created=self.created,
            labels=dict(self.labels),
        )


def valid_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def _invalid_name(name: str) -> InvalidArgument:
    return InvalidArgument(
        f"create {name}: {json.dumps(name, ensure_ascii=False)} includes invalid characters"
        f' for a local volume name, only "{NAME_CHARS}" are allowed. If you intended to pass'
        " a host directory, use absolute path"
    )


def _no_such_volume(name: str) -> NotFound:
    return NotFound(f"get {name}: no such volume")


def _in_use(name: str, users: Sequence[str]) -> Conflict:
    return Conflict(f"remove {name}: volume is in use - [{', '.join(users)}]")


def _disk_usage(path: Path) -> int:
    """Bytes in the files below `path`, each inode counted once (docker's rule)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def _write_meta(path: Path, meta: dict[str, object]) -> None:
    with path.open("w") as f:
        json.dump(meta, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def _read_meta(path: Path) -> dict[str, Any]:
    """The metadata; empty for a directory put there by hand (or damaged)."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class VolumeStore:
    """The local volumes of one engine, under `root` (`<data-root>/volumes`)."""

    def __init__(
        self,
        root: Path,
        *,
        clock: Callable[[], float] = time.time,
        new_name: Callable[[], str] = lambda: secrets.token_hex(32),
    ) -> None:
        self.root = root
        self._clock = clock
        self._new_name = new_name
        self._lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)
        for entry in root.iterdir():
            if entry.name.startswith((_TMP, _TRASH)):
                shutil.rmtree(entry, ignore_errors=True)

    def create(
        self,
        name: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        anonymous: bool = False,
    ) -> Volume:
        """A new volume, or the existing one of that name (as docker); no name: random."""
        if name is None:
            name = self._new_name()
        if not valid_name(name):
            raise _invalid_name(name)
        with self._lock:
            existing = self._load(name)
            if existing is not None:
                return existing
            meta = {
                "created": int(self._clock()),
                "labels": dict(labels or {}),
                "anonymous": anonymous,
            }
            self._materialize(name, meta)
            volume = self._load(name)
        assert volume is not None
        return volume

    def get(self, name: str) -> Volume:
        with self._lock:
            volume = self._load(name) if valid_name(name) else None
        if volume is None:
            raise _no_such_volume(name)
        return volume

    def mountpoint(self, name: str) -> Path:
        """The directory to bind-mount (`<root>/<name>/_data`)."""
        return self.get(name).mountpoint

    def list(self) -> builtins.list[Volume]:
        """Every volume, by name."""
        with self._lock:
            return self._load_all()

    def remove(self, name: str, *, force: bool = False, users: Users) -> None:
        """Remove a volume no container uses; `force` only forgives a missing one (docker)."""
        with self._lock:
            if not valid_name(name) or not (self.root / name).is_dir():
                if force:
                    return
                raise _no_such_volume(name)
            in_use = list(users(name))
            if in_use:
                raise _in_use(name, in_use)
            trash = self._detach(name)
        shutil.rmtree(trash, ignore_errors=True)

    def prune(self, users: Users, *, all_volumes: bool = False) -> tuple[builtins.list[str], int]:
        """Remove unused anonymous volumes (all unused ones with `all_volumes`).

        Returns the names removed and the bytes their data took.
        """
        with self._lock:
            doomed = [
                v.name
                for v in self._load_all()
                if (all_volumes or v.anonymous) and not list(users(v.name))
            ]
            trash = [self._detach(name) for name in doomed]
        reclaimed = sum(_disk_usage(t / DATA_DIR) for t in trash)
        for t in trash:
            shutil.rmtree(t, ignore_errors=True)
        return doomed, reclaimed

    # ---- on disk, with the lock held ----------------------------------------------

    def _load_all(self) -> builtins.list[Volume]:
        loaded = (self._load(e.name) for e in sorted(self.root.iterdir()) if valid_name(e.name))
        return [v for v in loaded if v is not None]

    def _load(self, name: str) -> Volume | None:
        """The volume `name` (already validated), or None when there is none."""
        directory = self.root / name
        if not directory.is_dir():
            return None
        meta = _read_meta(directory / META_FILE)
        created = meta.get("created")
        return Volume(
            name=name,
            mountpoint=directory / DATA_DIR,
            created=int(created) if created is not None else int(directory.stat().st_mtime),
            labels=dict(meta.get("labels") or {}),
            anonymous=bool(meta.get("anonymous", False)),
        )

    def _materialize(self, name: str, meta: dict[str, object]) -> None:
        """Build the volume under a hidden name, then rename it into place."""
        tmp = self.root / f"{_TMP}{secrets.token_hex(8)}"
        try:
            (tmp / DATA_DIR).mkdir(parents=True, mode=0o755)
            _write_meta(tmp / META_FILE, meta)
            os.rename(tmp, self.root / name)
            _fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _detach(self, name: str) -> Path:
        """Move the volume out of sight; the caller deletes the returned directory."""
        trash = self.root / f"{_TRASH}{secrets.token_hex(8)}"
        os.rename(self.root / name, trash)
        return trash

"""COPY/ADD: finding the sources, viewing a stage's files, and planning the layer.

Sources are looked up below a root: the unpacked build context, or the merged view of
another stage or image (`--from`). A source path is cleaned first; one that climbs out
of the root (`../x`) is refused before anything is read, and symlinks inside the root
are followed only within it (`rootfs.resolve_in_root`), so no source can name a host
file. Globs match within the root.

A stage's merged view is an overlayfs mount of its layers with a throw-away upper dir,
under the build's work dir; it is always unmounted before the `with` block ends.

`plan` turns sources and a destination into layer `Entry`s, docker's rules: a
directory source copies its contents; several sources (or a glob) need a destination
ending in `/`; a file copied onto an existing directory goes inside it; missing
parents are created 0755 root; existing parents keep their metadata (a layer entry
for a directory replaces the lower one's mode and owner, so it must carry them).
"""

from __future__ import annotations

import contextlib
import glob
import os
import posixpath
import secrets
import shutil
import stat
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from api.errors import InvalidArgument

from ..containers import rootfs
from ..images.store import Image, ImageStore
from ..images.tarsafe import extract_layer
from .layers import Entry

_MAGIC = frozenset("*?[")


@dataclass(frozen=True)
class Source:
    name: str  # what a copied file is called in a directory destination
    host: Path
    is_dir: bool
    archive_owner: bool = False  # an extracted ADD archive: keep its owners


def resolve(root: Path, sources: Sequence[str], *, command: str) -> list[Source]:
    found: list[Source] = []
    for source in sources:
        found.extend(_resolve_one(root, source, command=command))
    return found


def _resolve_one(root: Path, source: str, *, command: str) -> list[Source]:
    cleaned = posixpath.normpath("/" + source).lstrip("/") or "."
    if posixpath.normpath(source) == ".." or posixpath.normpath(source).startswith("../"):
        raise InvalidArgument(f"forbidden path outside the build context: {source}")
    if _MAGIC & set(cleaned):
        # glob walks the host's view; each match is then looked up inside the root,
        # and one a symlink led elsewhere (so it is not there) is dropped.
        matches = sorted(glob.glob(cleaned, root_dir=root, recursive=False))
        found = [_source(root, match) for match in matches]
        found = [s for s in found if os.path.lexists(s.host)]
        if not found:
            raise InvalidArgument(
                f"{command} failed: no source files were specified (nothing matches {source})"
            )
        return found
    host = rootfs.resolve_in_root(root, cleaned)
    if not os.path.lexists(host):
        raise InvalidArgument(
            f"{command} failed: file not found in build context or excluded by "
            f".dockerignore: {source}"
        )
    return [_source(root, cleaned)]


def _source(root: Path, rel: str) -> Source:
    host = rootfs.resolve_in_root(root, rel)
    return Source(name=posixpath.basename(rel) or ".", host=host, is_dir=host.is_dir())


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://", "ftp://", "git@")) or "://" in source


def extract_archives(sources: list[Source], *, work: Path) -> list[Source]:
    """ADD: local tar archives (plain or compressed) become their extracted trees."""
    out = []
    for source in sources:
        if source.is_dir or not source.host.is_file() or not _is_tar(source.host):
            out.append(source)
            continue
        dest = work / f"archive-{secrets.token_hex(6)}"
        dest.mkdir(mode=0o755)
        with open(source.host, "rb") as stream:
            extract_layer(stream, dest)
        out.append(Source(name=source.name, host=dest, is_dir=True, archive_owner=True))
    return out


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except (OSError, tarfile.TarError, EOFError):
        return False


@contextlib.contextmanager
def merged_view(images: ImageStore, image: Image | None, *, work: Path) -> Iterator[Path]:
    """The image's files as one read-only-by-convention tree (empty for scratch)."""
    base = work / f"view-{secrets.token_hex(6)}"
    target = base / "merged"
    for sub in ("merged", "upper", "work"):
        (base / sub).mkdir(parents=True)
    mounted = False
    try:
        if image is not None and image.layers:
            rootfs.mount_overlay(
                lowers=images.layer_dirs(image), upper=base / "upper", work=base / "work",
                target=target,
            )  # fmt: skip
            mounted = True
        yield target
    finally:
        if mounted:
            rootfs.unmount(target)
        shutil.rmtree(base, ignore_errors=True)


def plan(
    view: Path,
    sources: Sequence[Source],
    *,
    dest: str,
    workdir: str,
    owner: tuple[int, int],
    command: str,
) -> list[Entry]:
    """The layer entries of `COPY sources dest` onto the stage seen at `view`."""
    absolute = posixpath.normpath(posixpath.join(workdir or "/", dest))
    into_dir = dest.endswith("/") or dest in (".", "./")
    if len(sources) > 1 and not into_dir:
        raise InvalidArgument(
            f"When using {command} with more than one source file, the destination must be "
            "a directory and end with a /"
        )
    resolved = _in_view(view, absolute)
    target_host = view / resolved if resolved else view
    if not into_dir and target_host.is_dir() and not any(s.is_dir for s in sources):
        into_dir = True  # a file onto an existing directory goes inside it
    entries: list[Entry] = []
    for source in sources:
        entries.extend(
            _parents(view, resolved if (into_dir or source.is_dir) else _parent(resolved))
        )
        keep = None if source.archive_owner else owner
        if source.is_dir:
            entries.append(Entry(name=resolved, source=source.host, owner=keep))
        elif into_dir:
            name = f"{resolved}/{source.name}" if resolved else source.name
            entries.append(Entry(name=name, source=source.host, owner=keep))
        else:
            entries.append(Entry(name=resolved, source=source.host, owner=keep))
    return entries


def _parent(rel: str) -> str:
    return posixpath.dirname(rel)


def _in_view(view: Path, absolute: str) -> str:
    """`absolute` with the view's symlinks resolved, relative to `/` ("" for `/`)."""
    host = rootfs.resolve_in_root(view, absolute)
    return host.relative_to(view).as_posix().strip(".").strip("/")


def _parents(view: Path, rel: str) -> list[Entry]:
    """Directory entries for `rel` and its ancestors: as they are, or new 0755 root."""
    entries = []
    parts = [p for p in rel.split("/") if p]
    for depth in range(1, len(parts) + 1):
        name = "/".join(parts[:depth])
        try:
            st = os.lstat(view / name)
        except FileNotFoundError:
            entries.append(Entry(name=name, mode=0o755, owner=(0, 0)))
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise InvalidArgument(f"/{name} exists and is not a directory")
        entries.append(
            Entry(
                name=name, mode=stat.S_IMODE(st.st_mode), owner=(st.st_uid, st.st_gid),
                mtime=st.st_mtime,
            )
        )  # fmt: skip
    return entries


def directories(view: Path, absolute: str) -> list[Entry]:
    """WORKDIR: entries making the directory `absolute` and its missing parents, or
    none when the stage has it already."""
    rel = _in_view(view, absolute)
    if not rel or (view / rel).is_dir():
        return []
    return _parents(view, rel)


def chown(view: Path, spec: str) -> tuple[int, int]:
    """`--chown=user[:group]` by name or id, looked up in the stage's files; a user
    alone gives the group of the same numeric id, as docker."""
    if not spec:
        return (0, 0)
    who = rootfs.resolve_user(view, spec)
    return (who.uid, who.gid if ":" in spec else who.uid)

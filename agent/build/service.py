"""The engine's build entry point: a spooled context tar in, `Progress` messages out.

`build(engine, options, context_tar, cancelled=...)`:
1. unpacks the context with the image store's safe tar extraction (no entry can land
   outside the build's work dir) into `<data-root>/tmp/build-*/context`;
2. reads the Dockerfile (before `.dockerignore` is applied: docker always sends it),
   checks it is UTF-8 and parses it, then removes what `.dockerignore` excludes;
3. runs the `Builder`, turning its output into `Progress.stream` messages (none with
   `quiet`); the last message carries the image ID in `digest`, or an `error`.
Errors never escape as exceptions: the client always gets one last message. The work
dir is removed at the end, after making sure nothing is mounted below it.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from api import engine_pb2
from api.errors import InvalidArgument, NotFound, PyswarmError

from ..containers import rootfs
from ..engine import Engine
from ..images.reference import parse_reference
from ..images.tarsafe import extract_layer
from . import ignore
from .builder import Builder
from .cache import BuildCache
from .dockerfile import decode, parse
from .run import RunFailed

log = logging.getLogger(__name__)
MAX_DOCKERFILE = 1 << 20


def build(
    engine: Engine,
    options: engine_pb2.BuildOptions,
    context_tar: IO[bytes],
    *,
    cancelled: Callable[[], bool],
) -> Iterator[engine_pb2.Progress]:
    work = Path(tempfile.mkdtemp(prefix="build-", dir=engine.tmp))
    try:
        builder = _prepare(engine, options, context_tar, work=work, cancelled=cancelled)
        for chunk in builder.run():
            if not options.quiet:
                yield engine_pb2.Progress(stream=chunk)
        yield engine_pb2.Progress(digest=builder.image_id)
    except RunFailed as error:
        tail = b"".join(line if line.endswith(b"\n") else line + b"\n" for line in error.tail)
        shown = (tail.decode("utf-8", "replace") if options.quiet else "") + error.message
        yield engine_pb2.Progress(error=shown)
    except PyswarmError as error:
        yield engine_pb2.Progress(error=error.message)
    except Exception as error:
        log.exception("build failed")
        yield engine_pb2.Progress(error=f"build failed: {error}")
    finally:
        _remove_work(work)


def _prepare(
    engine: Engine,
    options: engine_pb2.BuildOptions,
    context_tar: IO[bytes],
    *,
    work: Path,
    cancelled: Callable[[], bool],
) -> Builder:
    tags = [_tag(tag) for tag in options.tags]
    del options.tags[:]
    options.tags.extend(tags)
    context = work / "context"
    context.mkdir(mode=0o755)
    extract_layer(context_tar, context)
    name = _dockerfile_name(options.dockerfile)
    dockerfile = parse(decode(_read_dockerfile(context, name)))
    if name.startswith(ignore.OUTSIDE_DOCKERFILE_PREFIX):
        (context / name).unlink()  # not part of the context: COPY . must not see it
    _apply_ignore(context)
    cache = BuildCache(
        engine.options.data_root / "build" / "cache.json", exists=lambda i: _exists(engine, i)
    )
    return Builder(
        images=engine.images,
        containers=engine.containers,
        options=options,
        dockerfile=dockerfile,
        context=context,
        work=work,
        cache=cache,
        cancelled=cancelled,
        pull=lambda reference: _pull(engine, reference, cancelled=cancelled),
    )


def _pull(engine: Engine, reference: str, *, cancelled: Callable[[], bool]) -> Iterator[bytes]:
    """A base image pulled as `pyswarm pull` would (no credentials: public or
    anonymous registries only), its progress as build output lines."""
    from ..registry import service as registry

    request = engine_pb2.ImagePullRequest(reference=reference)
    for progress in registry.pull(engine, request, cancelled=cancelled):
        if progress.error:
            raise InvalidArgument(progress.error)
        if progress.status in ("Downloading", "Extracting", "Pushing", "Waiting"):
            continue  # byte counts: the progress bars of `pull`, not build output
        line = f"{progress.id}: {progress.status}" if progress.id else progress.status
        yield f"{line}\n".encode()


def _tag(text: str) -> str:
    """A tag as `Successfully tagged` shows it: familiar name, `:latest` by default."""
    ref = parse_reference(text)
    if ref.digest is not None:
        raise InvalidArgument(f"invalid tag {text!r}: a tag cannot name a digest")
    return str(ref) if ref.tag is not None else f"{ref}:latest"


def _dockerfile_name(name: str) -> str:
    cleaned = posixpath.normpath(name or "Dockerfile").lstrip("/")
    if cleaned == ".." or cleaned.startswith("../"):
        raise InvalidArgument(f"the Dockerfile ({name}) must be within the build context")
    return cleaned


def _read_dockerfile(context: Path, name: str) -> bytes:
    path = rootfs.resolve_in_root(context, name)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_DOCKERFILE + 1)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise InvalidArgument(f"Cannot locate specified Dockerfile: {name}") from None
    if len(data) > MAX_DOCKERFILE:
        raise InvalidArgument(f"the Dockerfile ({name}) is larger than {MAX_DOCKERFILE} bytes")
    return data


def _apply_ignore(context: Path) -> None:
    """Remove what .dockerignore excludes (the client may not have done it)."""
    matcher = ignore.Matcher.from_context(context)
    if not matcher.patterns:
        return
    kept = set(ignore.walk(context, matcher))
    for directory, dirs, files in os.walk(context, topdown=False):
        rel_dir = os.path.relpath(directory, context)
        for name in files + [d for d in dirs if os.path.islink(os.path.join(directory, d))]:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if rel not in kept:
                os.unlink(os.path.join(directory, name))
        if rel_dir != "." and rel_dir not in kept and not os.listdir(directory):
            os.rmdir(directory)


def _exists(engine: Engine, image_id: str) -> bool:
    try:
        engine.images.resolve(image_id)
    except NotFound:
        return False
    return True


def _remove_work(work: Path) -> None:
    prefix = str(work) + "/"
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        mounts = [line.split()[4] for line in f]
    for target in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
        try:
            rootfs.unmount(Path(target))
        except PyswarmError as error:
            log.warning("build: %s; leaving %s", error.message, work)
            return
    shutil.rmtree(work, ignore_errors=True)

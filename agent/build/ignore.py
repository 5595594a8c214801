""".dockerignore patterns, and walking (or tarring) a build context with them.

Pattern semantics are docker's (moby/patternmatcher): one pattern a line, `#` comments,
paths relative to the context root (a leading `/` is dropped, the path is cleaned);
`*` matches within one path component, `?` one character, `[...]` a class, `**` any
number of components; a `!` pattern re-includes what an earlier one excluded; the last
matching pattern wins; a pattern that matches a directory matches everything below it.
The Dockerfile and `.dockerignore` themselves are always sent, as docker does; a
Dockerfile from outside the context travels as `OUTSIDE_DOCKERFILE_PREFIX<hex>`.

This module is pure (no engine state), so the client imports it to send less, and the
builder applies it again to what arrives: a client is not trusted to have done so.

    >>> Matcher.from_text("**/*.log\\n!keep.log").excluded("a/b/x.log")
    True
"""

from __future__ import annotations

import io
import os
import posixpath
import re
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

OUTSIDE_DOCKERFILE_PREFIX = ".pyswarm-dockerfile-"


@dataclass(frozen=True)
class Pattern:
    text: str
    exclusion: bool  # a `!` pattern: re-includes
    regex: re.Pattern[str]

    def matches(self, path: str) -> bool:
        return self.regex.fullmatch(path) is not None


def compile_pattern(line: str) -> Pattern | None:
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    exclusion = text.startswith("!")
    text = text[1:].strip() if exclusion else text
    text = posixpath.normpath(text.lstrip("/")) if text.lstrip("/") else "."
    return Pattern(text=text, exclusion=exclusion, regex=re.compile(_regex(text)))


def _regex(pattern: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):  # `**/` : zero or more whole components
                out.append("(?:.*/)?")
                i += 1
            else:
                out.append(".*")
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(char))
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


class Matcher:
    def __init__(self, patterns: Iterable[Pattern]) -> None:
        self.patterns = list(patterns)
        self.has_exclusions = any(p.exclusion for p in self.patterns)

    @classmethod
    def from_text(cls, text: str) -> Matcher:
        compiled = (compile_pattern(line) for line in text.splitlines())
        return cls(p for p in compiled if p is not None)

    @classmethod
    def from_context(cls, root: Path) -> Matcher:
        try:
            text = (root / ".dockerignore").read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return cls(())
        return cls.from_text(text)

    def excluded(self, path: str) -> bool:
        """Whether the context-relative `path` is left out (the last match wins)."""
        parts = path.strip("/").split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        result = False
        for pattern in self.patterns:
            if any(pattern.matches(prefix) for prefix in prefixes):
                result = not pattern.exclusion
        return result


def walk(root: Path, matcher: Matcher, *, keep: Iterable[str] = ()) -> Iterator[str]:
    """Context-relative paths (directories before their contents, sorted) not excluded;
    the `keep` paths are never excluded. Symlinks are listed, never followed."""
    kept = {posixpath.normpath(k) for k in keep}
    yield from _walk(root, "", matcher, kept)


def _walk(root: Path, prefix: str, matcher: Matcher, kept: set[str]) -> Iterator[str]:
    try:
        entries = sorted(os.scandir(root / prefix if prefix else root), key=lambda e: e.name)
    except NotADirectoryError:
        return
    for entry in entries:
        rel = f"{prefix}/{entry.name}" if prefix else entry.name
        skip = matcher.excluded(rel) and rel not in kept
        is_dir = entry.is_dir(follow_symlinks=False)
        if skip and not (is_dir and (matcher.has_exclusions or _has_kept_below(rel, kept))):
            continue
        if not skip:
            yield rel
        if is_dir:
            yield from _walk(root, rel, matcher, kept)


def _has_kept_below(rel: str, kept: set[str]) -> bool:
    return any(k.startswith(rel + "/") for k in kept)


def write_tar(
    root: Path,
    out: BinaryIO,
    *,
    matcher: Matcher,
    keep: Iterable[str] = (),
    extra: Mapping[str, bytes] | None = None,
) -> None:
    """The build context as an uncompressed tar stream, owned by root as docker sends it,
    plus `extra` files at the top (a Dockerfile from outside the context).

    A directory excluded but holding re-included entries is still sent as a directory
    (its entries need a parent)."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        sent: set[str] = set()
        for rel in walk(root, matcher, keep=keep):
            _add_parents(tar, root, rel, sent)
            _add(tar, root, rel)
            sent.add(rel)
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))


def _add_parents(tar: tarfile.TarFile, root: Path, rel: str, sent: set[str]) -> None:
    parent = posixpath.dirname(rel)
    missing = []
    while parent and parent not in sent:
        missing.append(parent)
        parent = posixpath.dirname(parent)
    for directory in reversed(missing):
        _add(tar, root, directory)
        sent.add(directory)


def _add(tar: tarfile.TarFile, root: Path, rel: str) -> None:
    info = tar.gettarinfo(str(root / rel), arcname=rel)
    if info is None:
        return  # a socket: nothing a build can use
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if info.isreg():
        with open(root / rel, "rb") as f:
            tar.addfile(info, f)
    elif info.isdir() or info.issym() or info.islnk():
        tar.addfile(info)

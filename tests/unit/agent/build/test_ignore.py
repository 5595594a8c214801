""".dockerignore patterns and context walking."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from agent.build.ignore import Matcher, walk, write_tar

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("patterns", "path", "excluded"),
    [
        ("*.log", "a.log", True),
        ("*.log", "dir/a.log", False),
        ("**/*.log", "dir/sub/a.log", True),
        ("**/*.log", "a.log", True),
        ("**/*.log\n!keep.log", "keep.log", False),
        ("build", "build/x/y", True),
        ("/build/", "build/x", True),
        ("a?c", "abc", True),
        ("[a-c]x", "bx", True),
        ("[!a-c]x", "bx", False),
        ("docs/**", "docs/a/b.md", True),
        ("# comment\n\n", "x", False),
        ("*\n!src", "src/main.py", False),
    ],
)
def test_patterns(patterns: str, path: str, excluded: bool) -> None:
    assert Matcher.from_text(patterns).excluded(path) is excluded


def _tree(root: Path) -> None:
    for name in ("Dockerfile", "a.log", "src/main.py", "src/x.log", "logs/keep.txt", "logs/b"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)


def test_walk_descends_into_excluded_dirs_only_for_exceptions(tmp_path: Path) -> None:
    _tree(tmp_path)
    matcher = Matcher.from_text("**/*.log\nlogs\n!logs/keep.txt\nDockerfile")
    assert list(walk(tmp_path, matcher, keep=["Dockerfile"])) == [
        "Dockerfile", "logs/keep.txt", "src", "src/main.py",
    ]  # fmt: skip


def test_write_tar_sends_parents_owned_by_root(tmp_path: Path) -> None:
    _tree(tmp_path)
    out = io.BytesIO()
    write_tar(tmp_path, out, matcher=Matcher.from_text("logs\n!logs/keep.txt"))
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert "logs" in members and members["logs"].isdir()
    assert "logs/keep.txt" in members and "logs/b" not in members
    assert {(m.uid, m.gid) for m in members.values()} == {(0, 0)}

"""COPY/ADD source lookup and destination planning, on plain directories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.build import sources
from api.errors import InvalidArgument

pytestmark = pytest.mark.unit


@pytest.fixture
def context(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "dir" / "sub" / "f").write_text("f")
    (root / "a.txt").write_text("a")
    (root / "b.txt").write_text("b")
    os.symlink("/etc/passwd", root / "escape")
    return root


@pytest.fixture
def view(tmp_path: Path) -> Path:
    root = tmp_path / "view"
    (root / "tmp").mkdir(parents=True)
    os.chmod(root / "tmp", 0o1777)
    (root / "etc").mkdir()
    (root / "etc" / "file").write_text("x")
    os.symlink("tmp", root / "link")
    return root


def test_outside_the_context_is_refused(context: Path) -> None:
    for bad in ("../x", "dir/../../x", ".."):
        with pytest.raises(InvalidArgument, match="forbidden path outside the build context"):
            sources.resolve(context, [bad], command="COPY")


def test_missing_and_globs(context: Path) -> None:
    with pytest.raises(InvalidArgument, match="file not found in build context"):
        sources.resolve(context, ["nope"], command="COPY")
    found = sources.resolve(context, ["*.txt"], command="COPY")
    assert [s.name for s in found] == ["a.txt", "b.txt"]


def test_symlinks_resolve_inside_the_context(context: Path) -> None:
    with pytest.raises(InvalidArgument, match="file not found"):
        sources.resolve(context, ["escape"], command="COPY")  # → <context>/etc/passwd


def test_plan_file_dir_and_existing_parents(context: Path, view: Path) -> None:
    found = sources.resolve(context, ["a.txt", "dir"], command="COPY")
    entries = sources.plan(view, found, dest="/tmp/new/", workdir="/", owner=(1, 2), command="COPY")
    names = [(e.name, e.source is not None) for e in entries]
    assert ("tmp", False) in names and ("tmp/new", False) in names
    assert ("tmp/new/a.txt", True) in names and ("tmp/new", True) in names
    tmp_entry = next(e for e in entries if e.name == "tmp")
    assert tmp_entry.mode == 0o1777  # an existing parent keeps its metadata


def test_plan_rules(context: Path, view: Path) -> None:
    two = sources.resolve(context, ["a.txt", "b.txt"], command="COPY")
    with pytest.raises(InvalidArgument, match="must be a directory and end with a /"):
        sources.plan(view, two, dest="/x", workdir="/", owner=(0, 0), command="COPY")
    one = sources.resolve(context, ["a.txt"], command="COPY")
    into = sources.plan(view, one, dest="/etc", workdir="/", owner=(0, 0), command="COPY")
    assert into[-1].name == "etc/a.txt"  # onto an existing directory: inside it
    rel = sources.plan(view, one, dest="b", workdir="/link", owner=(0, 0), command="COPY")
    assert rel[-1].name == "tmp/b"  # the workdir's symlink followed inside the view
    with pytest.raises(InvalidArgument, match="not a directory"):
        sources.plan(view, one, dest="/etc/file/x", workdir="/", owner=(0, 0), command="COPY")


def test_directories_for_workdir(view: Path) -> None:
    assert sources.directories(view, "/tmp") == []
    assert [e.name for e in sources.directories(view, "/tmp/a/b")] == ["tmp", "tmp/a", "tmp/a/b"]

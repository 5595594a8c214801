"""The build service's input handling: context tar, Dockerfile, .dockerignore, and
one last Progress carrying the error, with nothing left in the tmp dir."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from agent.build import service
from api import engine_pb2

pytestmark = pytest.mark.unit


def _context(files: dict[str, bytes]) -> io.BytesIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out.seek(0)
    return out


def _build(tmp_path: Path, files: dict[str, bytes], **options: Any) -> list[engine_pb2.Progress]:
    (tmp_path / "tmp").mkdir(exist_ok=True)
    engine = SimpleNamespace(tmp=tmp_path / "tmp", options=SimpleNamespace(data_root=tmp_path))
    opts = engine_pb2.BuildOptions(**options)
    return list(service.build(cast(Any, engine), opts, _context(files), cancelled=lambda: False))


@pytest.mark.parametrize(
    ("files", "options", "error"),
    [
        ({"Dockerfile": b"FROM x\nFOO y\n"}, {}, "unknown instruction: FOO"),
        ({"Dockerfile": b"FROM x\n\xff\n"}, {}, "not valid UTF-8"),
        ({"other": b""}, {}, "Cannot locate specified Dockerfile: Dockerfile"),
        ({"Dockerfile": b""}, {"dockerfile": "../Dockerfile"}, "must be within the build"),
        ({"Dockerfile": b"FROM x\n"}, {"tags": ["Bad:Tag"]}, "invalid reference format"),
    ],
)
def test_bad_input_is_one_error(
    tmp_path: Path, files: dict[str, bytes], options: dict[str, Any], error: str
) -> None:
    progress = _build(tmp_path, files, **options)
    assert len(progress) == 1 and error in progress[0].error
    assert list((tmp_path / "tmp").iterdir()) == []


def test_dockerignore_is_applied_again(tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    for name in ("Dockerfile", ".dockerignore", "keep/a", "drop/b", "drop/keep.txt", "x.log"):
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        (context / name).write_text(name)
    (context / ".dockerignore").write_text("drop\n!drop/keep.txt\n*.log\n")
    service._apply_ignore(context)
    left = sorted(p.relative_to(context).as_posix() for p in context.rglob("*"))
    assert left == [".dockerignore", "Dockerfile", "drop", "drop/keep.txt", "keep", "keep/a"]

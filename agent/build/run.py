"""RUN: one command in a real container of the engine, its output streamed.

The container is created from the stage's current image with the image's ENTRYPOINT
ignored (`entrypoint_set` with an empty entrypoint), the stage's env plus the build
args in effect, its workdir and user, on network `none`. Whatever happens — a start
failure, a non-zero exit, a cancelled build — the container and its anonymous volumes
are removed before the step ends; the layer is made only after a zero exit.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from api import engine_pb2
from api.errors import EngineFailure, InvalidArgument, PyswarmError

from ..containers.engine import ContainerEngine

TAIL_LINES = 10
BUILD_LABEL = "io.pyswarm.build"


class RunFailed(InvalidArgument):
    """A RUN exited non-zero; `tail` holds its last lines of output."""

    def __init__(self, message: str, *, tail: Sequence[bytes]) -> None:
        super().__init__(message)
        self.tail = list(tail)


@dataclass(frozen=True)
class RunSpec:
    image_id: str
    argv: list[str]
    env: list[str]
    workdir: str
    user: str

    @property
    def shown(self) -> str:
        return " ".join(self.argv)


def container_config(spec: RunSpec) -> engine_pb2.ContainerConfig:
    return engine_pb2.ContainerConfig(
        image=spec.image_id,
        entrypoint_set=True,
        entrypoint=[],
        cmd=spec.argv,
        env=spec.env,
        workdir=spec.workdir,
        user=spec.user,
        network="none",
        labels={BUILD_LABEL: "true"},
        stop_timeout=-1,
    )


@contextlib.contextmanager
def build_container(containers: ContainerEngine, spec: RunSpec) -> Iterator[str]:
    cid, _ = containers.create(container_config(spec))
    try:
        yield cid
    finally:
        with contextlib.suppress(PyswarmError):
            containers.remove(cid, force=True, volumes=True)


def run_output(
    containers: ContainerEngine, cid: str, spec: RunSpec, *, cancelled: Callable[[], bool]
) -> Iterator[bytes]:
    """Start the container and yield its output until it exits; RunFailed if it
    exits non-zero, EngineFailure if the build was cancelled meanwhile."""
    tail: collections.deque[bytes] = collections.deque(maxlen=TAIL_LINES)
    containers.start(cid)
    request = engine_pb2.LogsRequest(id=cid, follow=True, tail=-1, stdout=True, stderr=True)
    for record in containers.logs(request, cancelled=cancelled):
        tail.append(record.data)
        yield record.data
    if cancelled():
        raise EngineFailure("build cancelled")
    code = containers.wait_exit(cid).exit_code
    if code != 0:
        raise RunFailed(f"The command '{spec.shown}' returned a non-zero code: {code}", tail=tail)

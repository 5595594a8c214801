"""Servicer plumbing shared by every gRPC service the daemon serves.

`rpc` wraps a servicer method, unary or streaming, so that a `PyswarmError` becomes
a gRPC status carrying its one-line message (and the exit code a `run` must end with,
126/127, as trailing metadata `pyswarm-exit-code`), and an `OSError` becomes an
INTERNAL status instead of a traceback in the client.

It also records the caller's deadline: `time_left(default)` tells code deep in a call
(a Raft proposal, say) how long it may still wait, so that it fails with its own clear
error ("the swarm does not have a leader") just before the caller would give up with
a bare DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import grpc

from api.errors import EngineFailure, PyswarmError

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
EXIT_CODE_KEY = "pyswarm-exit-code"
MARGIN = 0.3  # seconds kept back to send the error before the caller's deadline

_deadline: ContextVar[float | None] = ContextVar("deadline", default=None)


def time_left(default: float) -> float:
    """Seconds this request may still take: `default`, or less if the caller set a
    deadline (never below a small floor, so a call can still fail cleanly)."""
    deadline = _deadline.get()
    if deadline is None:
        return default
    return max(0.05, min(default, deadline - time.monotonic()))


def _record_deadline(context: grpc.ServicerContext) -> None:
    remaining = context.time_remaining()
    if remaining is not None and remaining < 1e6:
        _deadline.set(time.monotonic() + remaining - MARGIN)
    else:
        _deadline.set(None)


def abort(context: grpc.ServicerContext, exc: PyswarmError) -> None:
    code = getattr(exc, "exit_code", None)
    if code is not None:
        context.set_trailing_metadata(((EXIT_CODE_KEY, str(code)),))
    context.abort(exc.status, exc.message)


@contextmanager
def _statuses(context: grpc.ServicerContext, name: str) -> Iterator[None]:
    """Within one call: the caller's deadline recorded, our errors turned into statuses."""
    _record_deadline(context)
    try:
        yield
    except PyswarmError as exc:
        abort(context, exc)
    except OSError as exc:
        log.exception("%s failed", name)
        abort(context, EngineFailure(str(exc)))


def rpc(fn: F) -> F:
    """Map component errors onto gRPC statuses, for unary and streaming methods alike."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def stream(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            with _statuses(context, fn.__name__):
                yield from fn(self, request, context)

        return stream  # type: ignore[return-value]

    @functools.wraps(fn)
    def unary(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        with _statuses(context, fn.__name__):
            return fn(self, request, context)

    return unary  # type: ignore[return-value]

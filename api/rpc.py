"""Servicer plumbing shared by every gRPC service the daemon serves.

`rpc` wraps a servicer method, unary or streaming, so that a `PyswarmError` becomes
a gRPC status carrying its one-line message (and the exit code a `run` must end with,
126/127, as trailing metadata `pyswarm-exit-code`), and an `OSError` becomes an
INTERNAL status instead of a traceback in the client.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from api.errors import EngineFailure, PyswarmError

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
EXIT_CODE_KEY = "pyswarm-exit-code"


def abort(context: grpc.ServicerContext, exc: PyswarmError) -> None:
    code = getattr(exc, "exit_code", None)
    if code is not None:
        context.set_trailing_metadata(((EXIT_CODE_KEY, str(code)),))
    context.abort(exc.status, exc.message)


def rpc(fn: F) -> F:
    """Map component errors onto gRPC statuses, for unary and streaming methods alike."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def stream(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from fn(self, request, context)
            except PyswarmError as exc:
                abort(context, exc)
            except OSError as exc:
                log.exception("%s failed", fn.__name__)
                abort(context, EngineFailure(str(exc)))

        return stream  # type: ignore[return-value]

    @functools.wraps(fn)
    def unary(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(self, request, context)
        except PyswarmError as exc:
            abort(context, exc)
        except OSError as exc:
            log.exception("%s failed", fn.__name__)
            abort(context, EngineFailure(str(exc)))

    return unary  # type: ignore[return-value]

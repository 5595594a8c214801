"""The error taxonomy shared by every component, and its mapping onto gRPC status codes.

Components raise these; the daemon's servicers turn them into gRPC statuses with the
message as details; the client prints `Error response from daemon: <message>`.
The message is one line a user can act on, in docker's words where docker has some
("No such container: web").
"""

from __future__ import annotations

import grpc


class PyswarmError(Exception):
    """Base class; `status` is the gRPC code the daemon answers with."""

    status: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(PyswarmError):
    status = grpc.StatusCode.NOT_FOUND


class Conflict(PyswarmError):
    """Name in use, object in use, wrong state for the operation."""

    status = grpc.StatusCode.FAILED_PRECONDITION


class SequenceConflict(Conflict):
    """An update carried a stale `meta.version`: the object changed since it was read."""


class AlreadyExists(PyswarmError):
    status = grpc.StatusCode.ALREADY_EXISTS


class InvalidArgument(PyswarmError):
    status = grpc.StatusCode.INVALID_ARGUMENT


class Unavailable(PyswarmError):
    status = grpc.StatusCode.UNAVAILABLE


class CommandNotFound(PyswarmError):
    """The container's command does not exist (docker run exits 127)."""

    status = grpc.StatusCode.NOT_FOUND
    exit_code = 127


class CommandNotExecutable(PyswarmError):
    """The container's command exists but cannot be executed (docker run exits 126)."""

    status = grpc.StatusCode.PERMISSION_DENIED
    exit_code = 126


class EngineFailure(PyswarmError):
    """The runtime, conmon, mount or kernel failed (docker run exits 125)."""

    status = grpc.StatusCode.INTERNAL


class PermissionDenied(PyswarmError):
    """The caller's certificate does not allow this call (a worker on the control API)."""

    status = grpc.StatusCode.PERMISSION_DENIED

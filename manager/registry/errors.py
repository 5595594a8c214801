"""The OCI distribution spec's error codes and their JSON body.

Every failure the server answers with is a `RegistryError`; the application turns it
into `{"errors": [{"code": ..., "message": ..., "detail": ...}]}` with the code's HTTP
status, as the distribution spec ("Error Codes") and docker's reference registry do.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping

from aiohttp import web


class Code(enum.Enum):
    """A spec error code: its HTTP status and default message."""

    BLOB_UNKNOWN = (404, "blob unknown to registry")
    BLOB_UPLOAD_INVALID = (400, "blob upload invalid")
    BLOB_UPLOAD_UNKNOWN = (404, "blob upload unknown to registry")
    DIGEST_INVALID = (400, "provided digest did not match uploaded content")
    MANIFEST_BLOB_UNKNOWN = (400, "blob unknown to registry")
    MANIFEST_INVALID = (400, "manifest invalid")
    MANIFEST_UNKNOWN = (404, "manifest unknown")
    NAME_INVALID = (400, "invalid repository name")
    NAME_UNKNOWN = (404, "repository name not known to registry")
    SIZE_INVALID = (400, "provided length did not match content length")
    TAG_INVALID = (400, "manifest tag did not match URI")
    UNAUTHORIZED = (401, "authentication required")
    DENIED = (403, "requested access to the resource is denied")
    UNSUPPORTED = (405, "The operation is unsupported.")
    PAGINATION_NUMBER_INVALID = (400, "invalid number of results requested")
    RANGE_INVALID = (416, "invalid content range")
    TOO_LARGE = (413, "request body exceeds the configured limit")

    @property
    def status(self) -> int:
        return self.value[0]

    @property
    def message(self) -> str:
        return self.value[1]


# Codes outside the spec's table are reported under the spec's nearest code name.
_WIRE_NAME = {Code.RANGE_INVALID: "BLOB_UPLOAD_INVALID", Code.TOO_LARGE: "SIZE_INVALID"}


class RegistryError(Exception):
    """A failure with a spec code; `detail` is any JSON value, `headers` extra headers."""

    def __init__(
        self,
        code: Code,
        detail: object = None,
        *,
        message: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message or code.message)
        self.code = code
        self.message = message or code.message
        self.detail = detail
        self.headers = dict(headers or {})

    @property
    def wire_code(self) -> str:
        return _WIRE_NAME.get(self.code, self.code.name)

    def body(self) -> bytes:
        error: dict[str, object] = {"code": self.wire_code, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return json.dumps({"errors": [error]}).encode()

    def response(self) -> web.Response:
        return web.Response(
            status=self.code.status,
            body=self.body(),
            content_type="application/json",
            headers=self.headers,
        )

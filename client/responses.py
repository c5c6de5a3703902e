"""Response classes shared by the app and the routes, and the one way an error leaves."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi.responses import Response

from client import request_id
from client.errors import APIError

log = logging.getLogger("client")


class JSONResponse(Response):
    """orjson-encoded responses (fast float formatting)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def public(error: APIError) -> APIError:
    """What the client may read: 4xx as they are; a 5xx says the adapter's own words (or a generic
    summary, the detail going to the log) and the request id that finds the log line."""
    if error.status < 500:
        return error
    rid = request_id.current.get()
    log.error("request %s failed with %d: %s", rid, error.status, error.message)
    if error.exposed:
        summary = error.message
    else:
        summary = "the model server is unavailable; retry shortly" if error.status == 503 else "internal error"
    return APIError(error.status, f"{summary} (request id {rid})", error.type, error.param, error.code)


def error_response(error: APIError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(public(error).body(), status_code=error.status, headers={**error.headers(), **(headers or {})})

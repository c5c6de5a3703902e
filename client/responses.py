"""Response classes shared by the app and the routes, and the one way an error leaves."""

from __future__ import annotations

import logging
from contextvars import ContextVar
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


# Cohere's API puts an error's text at the top level (`{"message": …}`): on its routes an error carries it
# beside the OpenAI `error` object every route answers with, so a client of either finds its own field.
COHERE_PATHS = frozenset({"/v1/embed", "/v2/embed", "/v1/rerank", "/v2/rerank"})
error_dialect: ContextVar[str] = ContextVar("error_dialect", default="")  # set per request by the gate


def error_response(error: APIError, headers: dict[str, str] | None = None) -> JSONResponse:
    body = public(error).body()
    if error_dialect.get() == "cohere":
        body = {"message": body["error"]["message"], **body}
    return JSONResponse(body, status_code=error.status, headers={**error.headers(), **(headers or {})})

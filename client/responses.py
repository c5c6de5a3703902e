"""Response classes shared by the app and the routes."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import Response

from client.errors import APIError


class JSONResponse(Response):
    """orjson-encoded responses (fast float formatting)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(error: APIError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=headers)

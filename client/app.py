"""`create_app(settings)`: the FastAPI app, its lifespan and error handlers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from client.errors import APIError, too_large
from client.images import ImageLoader
from client.registry import ModelRegistry
from client.routes import router
from client.service import EmbeddingService
from client.settings import Settings
from client.triton import TritonClient

log = logging.getLogger("client")


class JSONResponse(Response):
    """orjson-encoded responses (numpy-free, fast float formatting)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(error: APIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        return "request body is not valid JSON", None
    param = ".".join(loc) or None
    return f"{param or 'body'}: {first.get('msg', 'invalid value')}", param


def create_app(settings: Settings, triton: TritonClient | None = None) -> FastAPI:
    """The adapter; pass `triton` to use a prepared client (tests), else one is made in the lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = triton or TritonClient(settings.triton_url, settings.triton_timeout_s, settings.connect_timeout_s)
        registry = ModelRegistry(client, settings.model_refresh_s)
        images = ImageLoader(settings)
        app.state.service = EmbeddingService(settings, client, registry, images)
        try:
            names = [m.name for m in await registry.refresh()]
            log.info("serving models: %s", ", ".join(names) or "none yet")
        except APIError as exc:
            log.warning("Triton not reachable at start (%s); will retry per request", exc.message)
        yield
        await images.close()
        await client.close()

    app = FastAPI(
        title="Triton embeddings adapter", version="0.1.0", lifespan=lifespan, default_response_class=JSONResponse
    )
    app.state.settings = settings

    @app.middleware("http")
    async def body_limit(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
            return error_response(
                too_large(f"request body has {length} bytes; the maximum is {settings.max_body_bytes}")
            )
        return await call_next(request)

    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return error_response(APIError(400, message, "invalid_request_error", param, None))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found" if exc.status_code == 404 else "invalid_request_error"
        return error_response(APIError(exc.status_code, str(exc.detail), kind, None, None))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(APIError(500, "internal error; see the adapter log", "internal_error", None, None))

    app.include_router(router)
    return app

"""`create_app(settings)`: the FastAPI app, its lifespan and error handlers."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from client import request_id
from client.bodies import BodyParser, Held, MemoryBudget
from client.embed import EmbedTask
from client.errors import APIError, body_too_large, internal, invalid_fields
from client.hosts import HostNames
from client.images import ImageLoader
from client.inference import Inference
from client.metrics import Metrics
from client.registry import ModelRegistry
from client.responses import COHERE_PATHS, JSONResponse, error_dialect, error_response
from client.routes import DIRECT, router
from client.settings import Settings
from client.token_outputs import TokenOutputs
from client.triton import TritonClient
from client.workers import WorkerSet

log = logging.getLogger("client")
OPEN_PATHS = ("/health", "/health/ready", "/metrics")  # everything else, /docs included, needs the key


class ClientGone(Exception):
    """The client closed its connection before its body was in."""


class Gate:
    """Host name, API key, media type, the body and the in-flight bound, before any work; health and
    metrics need no key.

    The body is read here, to its cap and no further, within `body_timeout_s` and against the memory
    budget; only then does the request take one of the `max_in_flight` slots, so a client trickling its
    body holds a connection, never a slot. A plain ASGI middleware: with Starlette's
    `BaseHTTPMiddleware` (`@app.middleware`) the adapter's p50 overhead over Triton's ensemble for a
    short query was 5.0 ms; without it, 1.3 ms (`python -m bench.latency`).
    """

    def __init__(self, app: ASGIApp, settings: Settings, metrics: Metrics, budget: MemoryBudget) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.budget = budget
        self.in_flight = 0
        self.key = f"Bearer {settings.api_key}".encode() if settings.api_key is not None else None
        self.hosts = HostNames.of(settings)

    def unauthorised(self, headers: Headers) -> JSONResponse | None:
        if self.key is None or secrets.compare_digest(headers.get("authorization", "").encode(), self.key):
            return None
        error = APIError(
            401,
            "missing or wrong API key (Authorization: Bearer <key>)",
            "invalid_request_error",
            None,
            "invalid_api_key",
        )
        return error_response(error, {"WWW-Authenticate": "Bearer"})

    def overloaded(self) -> JSONResponse | None:
        if self.in_flight < self.settings.max_in_flight:
            return None
        self.metrics.rejected.inc()
        error = APIError(
            429,
            f"the server is at its limit of {self.settings.max_in_flight} requests in flight; retry shortly",
            "rate_limit_error",
            None,
            "server_overloaded",
        )
        return error_response(error, {"Retry-After": "1"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id.adopt(Headers(scope=scope).get(request_id.HEADER))
        error_dialect.set("cohere" if scope.get("path") in COHERE_PATHS else "")
        started = False

        async def send_with_id(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)[request_id.HEADER] = rid
            await send(message)

        held = Held(self.budget)
        try:
            await self._gated(scope, receive, send_with_id, held)
        except ClientGone:
            log.info("request %s: the client went away before its body was in", rid)
        except Exception:  # never a bare 500 page: the detail goes to the log under the request id
            log.exception("request %s: unhandled error", rid)
            if not started:
                await error_response(internal("unhandled error"))(scope, receive, send_with_id)
        finally:
            held.release()

    async def _gated(self, scope: Scope, receive: Receive, send: Send, held: Held) -> None:
        path = scope.get("path", "")
        host = Headers(scope=scope).get("host")
        if not self.hosts.allows(host):
            log.warning("refused a request for Host %.100r (allowed: %s)", host, self.hosts)
            error = APIError(
                400,
                "this server does not answer to that Host name; add it to EMBED_ALLOWED_HOSTS",
                "invalid_request_error",
                None,
                "invalid_host",
            )
            await error_response(error, {"Connection": "close"})(scope, receive, send)
            return
        if path in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self.unauthorised(headers)
        if refusal is None and scope.get("method") == "POST":
            try:
                body = await self.read_body(headers, receive, held)
            except APIError as exc:
                refusal = error_response(exc, {"Connection": "close"})
            else:
                receive = replay(body, receive)
        refusal = refusal or self.overloaded()
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        self.in_flight += 1
        self.metrics.in_flight.inc()
        try:
            direct = DIRECT.get((scope.get("method", ""), path))
            if direct is None:
                await self.app(scope, receive, send)
                return
            try:
                response = await direct(Request(scope, receive))
            except APIError as exc:
                response = error_response(exc)
            await response(scope, receive, send)
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.dec()

    async def read_body(self, headers: Headers, receive: Receive, held: Held) -> bytes:
        """The whole body, or an APIError: 415 not JSON, 413 over the cap (a declared length before any
        byte is read), 408 past the deadline, 503 over the memory budget (bytes held as they arrive)."""
        media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != "application/json":
            raise APIError(
                415,
                f"Content-Type must be application/json, got {media[:60]!r} "
                "(curl: -H 'Content-Type: application/json')",
                "invalid_request_error",
                None,
                "unsupported_media_type",
            )
        cap = self.settings.max_body_bytes
        length = headers.get("content-length", "")
        declared = int(length) if length.isdigit() else None
        if declared is not None:
            oversized = body_too_large(declared, cap)
            if oversized is not None:
                raise oversized
        try:
            return await asyncio.wait_for(self._receive_body(receive, cap, held), self.settings.body_timeout_s)
        except TimeoutError:
            raise APIError(
                408,
                f"the request body did not arrive within {self.settings.body_timeout_s:g} s",
                "invalid_request_error",
                None,
                "request_timeout",
            ) from None

    @staticmethod
    async def _receive_body(receive: Receive, cap: int, held: Held) -> bytes:
        """The body's bytes, each held against the memory budget as it arrives: a declared length
        reserves nothing, so idle connections that declare 2 MiB and send nothing hold no budget."""
        body = bytearray()
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                oversized = body_too_large(len(body) + len(chunk), cap)
                if oversized is not None:
                    raise oversized
                held.take(len(chunk))
                body += chunk
                if not message.get("more_body", False):
                    return bytes(body)
        except BaseException:
            body.clear()  # the failure's traceback (in wait_for's task, a cycle) must not keep the bytes
            raise


def replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body already read, then the connection's own messages (a disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def create_app(settings: Settings, triton: TritonClient | None = None, workers: WorkerSet | None = None) -> FastAPI:
    """The adapter; pass `triton` to use a prepared client (tests), else one is made in the lifespan;
    `workers`: the set this process serves in (client/workers.py)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = triton or TritonClient(
            settings.triton_url, settings.triton_timeout_s, settings.connect_timeout_s, settings.triton_admin_key
        )
        registry = ModelRegistry(client, settings.model_refresh_s, settings.model_refresh_min_s)
        images = ImageLoader(settings, budget)
        on_call = lambda model, rows: metrics.call_rows.labels(model).observe(rows)  # noqa: E731
        app.state.inference = Inference(settings, client, registry, on_call)
        app.state.embed = EmbedTask(settings, app.state.inference, images)
        app.state.token_outputs = TokenOutputs(settings, app.state.inference, app.state.embed)
        try:
            names = [m.name for m in await registry.refresh()]
            log.info("serving models: %s", ", ".join(names) or "none yet")
        except APIError as exc:
            log.warning("Triton not reachable at start (%s); will retry per request", exc.message)
        if workers is not None:
            workers.mark_ready()
        try:
            yield
        finally:
            if workers is not None:
                workers.mark_gone()
            await images.close()
            await client.close()

    docs = {} if settings.api_docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(
        title="Triton embeddings adapter",
        version="0.1.0",
        lifespan=lifespan,
        default_response_class=JSONResponse,
        **docs,
    )
    app.state.settings = settings
    app.state.workers = workers
    app.state.parser = BodyParser()
    budget = MemoryBudget(settings.max_buffered_bytes)

    metrics = Metrics()
    app.state.metrics = metrics
    app.add_middleware(Gate, settings=settings, metrics=metrics, budget=budget)

    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(invalid_fields(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found" if exc.status_code == 404 else "invalid_request_error"
        return error_response(APIError(exc.status_code, str(exc.detail), kind, None, None))

    app.include_router(router)
    return app

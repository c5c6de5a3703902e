"""The use cases: embed items, tokenize texts, report readiness. Routes call these; no HTTP here."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from client.coalescer import Coalescer
from client.errors import APIError
from client.images import ImageLoader
from client.protocol import EmbeddingRequest, TokenizeRequest
from client.registry import ModelRegistry
from client.settings import Settings
from client.tasks import all_or_cancel
from client.triton import ServedModel, TritonClient
from client.validation import (
    Item,
    check_dimensions,
    check_instruction,
    check_modalities,
    check_token_ids,
    check_token_options,
    controls_of,
    field_names,
    items_of,
    texts_of,
)
from runtime.contract import IMAGE, TEXT, TOKEN_IDS, TRUNCATE

log = logging.getLogger("client.service")


UNRESOLVED = "unknown"  # the metric label of requests that name no served model or fail before resolution


@dataclass
class Timings:
    """What the route reports of one request: the served model it resolved to, and seconds per stage."""

    model: str = UNRESOLVED
    image_fetch: float = 0.0
    triton: float = 0.0
    tokens: int = 0  # what the request counted, for the metrics


def shorten(vectors: np.ndarray, dimensions: int | None) -> np.ndarray:
    """Matryoshka truncation: keep the first `dimensions` components and re-normalise."""
    if dimensions is None or dimensions == vectors.shape[1]:
        return vectors
    cut = vectors[:, :dimensions]
    return cut / np.maximum(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12)


def encode_rows(vectors: np.ndarray, encoding_format: str) -> list[list[float]] | list[str]:
    """Float lists, or base64 of little-endian float32 as the openai SDK expects."""
    if encoding_format == "base64":
        data = vectors.astype("<f4", copy=False)
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in data]
    return vectors.astype(np.float32, copy=False).tolist()


def accepted(options: dict[str, str], controls: tuple[str, ...]) -> dict[str, str]:
    """The request's options an ensemble takes (its card's controls)."""
    return {k: v for k, v in options.items() if k in controls}


def _token_bytes(tokens: tuple[int, ...]) -> bytes:
    return np.asarray(tokens, dtype="<i8").tobytes()


class EmbeddingService:
    def __init__(
        self,
        settings: Settings,
        triton: TritonClient,
        registry: ModelRegistry,
        images: ImageLoader,
        on_call: Callable[[str, int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.triton = triton
        # Embedding calls go through the coalescer (which joins them only with `coalesce`); tokenize and
        # readiness probes straight to Triton.
        self.calls = Coalescer(triton, settings.calls_in_flight, on_call, join=settings.coalesce)
        self.registry = registry
        self.images = images
        self.last_success: dict[str, float] = {}
        self._ready_probe: asyncio.Future | None = None
        self._ready_at = float("-inf")

    async def embed(self, request: EmbeddingRequest, timings: Timings | None = None) -> dict:
        timings = timings or Timings()
        if request.model_extra:
            log.info("ignoring unknown request fields: %s", field_names(request.model_extra))
        model = await self.registry.resolve(request.model, "embed")
        timings.model = model.name
        items = items_of(request, self.settings.max_items_per_request)
        self.images.check_count(sum(item.image is not None for item in items))  # before any text is sent
        check_token_options(request, items)
        check_modalities(model, items)
        check_token_ids(model, items)
        check_instruction(model, request.instruction)
        options = controls_of(request, self.settings)
        check_dimensions(request.dimensions, model, self.settings.allow_any_dimensions)
        try:
            vectors, tokens = await self._embed_items(model, items, options, timings)
        except APIError as exc:
            if exc.status == 503:  # readiness probes this model again now instead of trusting the TTL
                self.last_success.pop(model.name, None)
            raise
        vectors = shorten(vectors, request.dimensions)
        self.last_success[model.name] = time.monotonic()
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": row}
                for i, row in enumerate(encode_rows(vectors, request.encoding_format))
            ],
            "model": model.name,  # the canonical id, whatever name the request used
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def _timed(self, timings: Timings, stage: str, coro):
        start = time.perf_counter()
        try:
            return await coro
        finally:
            setattr(timings, stage, getattr(timings, stage) + time.perf_counter() - start)

    async def _embed_items(
        self, model: ServedModel, items: list[Item], options: dict[str, str], timings: Timings
    ) -> tuple[np.ndarray, int]:
        """Route each item to its path, run the paths concurrently, reassemble in input order."""
        text_at = [i for i, item in enumerate(items) if item.image is None and item.tokens is None]
        token_at = [i for i, item in enumerate(items) if item.tokens is not None]
        image_at = [i for i, item in enumerate(items) if item.image is not None]
        batch = model.max_batch_size

        card = model.card

        async def texts() -> tuple[np.ndarray, np.ndarray]:
            values = [items[i].text or "" for i in text_at]
            controls = accepted(options, card.controls)
            return await self._timed(timings, "triton", self.calls.embed(model.name, values, batch, controls, text_at))

        async def token_ids() -> tuple[np.ndarray, np.ndarray]:
            blobs = [_token_bytes(items[i].tokens or ()) for i in token_at]
            # Token ids bypass the template; TEXT is required by the ensemble, so it travels empty.
            plain = {TEXT: "", **accepted(options, (TRUNCATE,))}
            return await self._timed(
                timings, "triton", self.calls.embed(model.name, blobs, batch, plain, token_at, TOKEN_IDS)
            )

        async def images() -> tuple[np.ndarray, np.ndarray]:
            sources = [items[i].image or "" for i in image_at]
            start = time.perf_counter()
            async with self.images.fetched(sources, image_at) as blobs:  # held until Triton has them
                timings.image_fetch += time.perf_counter() - start
                controls, columns = accepted(options, card.image_controls), None
                texts = [items[i].text or "" for i in image_at]
                if TEXT in card.image_controls and any(texts):  # each item's text goes into its image's prompt
                    columns = {TEXT: texts}
                call = self.calls.embed(
                    card.image_ensemble, blobs, model.image_batch, controls, image_at, IMAGE, columns
                )
                return await self._timed(timings, "triton", call)

        jobs = [(at, job()) for at, job in ((text_at, texts), (token_at, token_ids), (image_at, images)) if at]
        results = await all_or_cancel(*(coro for _, coro in jobs))
        out = np.empty((len(items), model.card.dimension), dtype=np.float32)
        tokens = 0
        for (positions, _), (vectors, counts) in zip(jobs, results, strict=True):
            if vectors.shape != (len(positions), model.card.dimension):
                raise APIError(
                    500, f"Triton returned {vectors.shape} embeddings for {len(positions)} inputs", "internal_error"
                )
            out[positions] = vectors
            tokens += int(counts.sum())
        return out, tokens

    async def tokenize(self, request: TokenizeRequest, timings: Timings | None = None) -> dict:
        """Token ids exactly as the encoder sees them: template, special tokens and truncation applied."""
        timings = timings or Timings()
        model = await self.registry.resolve(request.model, "embed")
        timings.model = model.name
        check_instruction(model, request.instruction)
        texts = texts_of(request, self.settings.max_items_per_request)
        ids, counts = await self._timed(
            timings,
            "triton",
            self.triton.tokenize(
                f"{model.name}_preprocess", texts, model.max_batch_size, controls_of(request, self.settings)
            ),
        )
        rows = [row[:n].tolist() for row, n in zip(ids, counts, strict=True)]
        return {
            "model": model.name,
            "tokens": rows,
            "counts": [len(r) for r in rows],
            "total": int(sum(len(r) for r in rows)),
            "max_tokens": model.card.max_tokens,
        }

    async def ready(self) -> list[str]:
        """Names of served models that answered an inference within `ready_ttl_s` (probing stale ones now).

        Open to anyone and outside the in-flight bound, so it is cheap to call: one probe at a time, its
        answer (or its error) reused for `ready_cache_s`, and concurrent callers share it.
        """
        probe = self._ready_probe
        if probe is None or (probe.done() and time.monotonic() - self._ready_at > self.settings.ready_cache_s):
            probe = self._ready_probe = asyncio.ensure_future(self._probe_ready())
            probe.add_done_callback(self._ready_done)
        return await asyncio.shield(probe)

    def _ready_done(self, probe: asyncio.Future) -> None:
        self._ready_at = time.monotonic()
        if not probe.cancelled():
            probe.exception()  # retrieved: each caller raises it for itself

    async def _probe_ready(self) -> list[str]:
        models = await self.registry.refresh()
        if not models:
            raise APIError(503, "no embedding model is ready in Triton", "service_unavailable", None, "no_model", True)
        now = time.monotonic()
        for model in models:
            if now - self.last_success.get(model.name, float("-inf")) > self.settings.ready_ttl_s:
                await self.triton.probe(model)
                self.last_success[model.name] = time.monotonic()
        return [m.name for m in models]

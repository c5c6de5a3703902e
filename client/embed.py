"""The embed task: items (texts, token-id lists, images, text beside an image) → one vector each, and
`/tokenize`. Routes call these; no HTTP here; Triton through the inference core."""

from __future__ import annotations

import base64
import logging
import time

import numpy as np

from client.compression import check_compression, compress
from client.errors import APIError
from client.images import ImageLoader
from client.inference import Inference, Timings
from client.protocol import EmbeddingRequest, TokenizeRequest
from client.settings import Settings
from client.tasks import all_or_cancel
from client.triton import ServedModel
from client.validation import (
    Item,
    check_dimensions,
    check_instruction,
    check_modalities,
    check_token_ids,
    check_token_options,
    controls_of,
    items_of,
    texts_of,
)
from contract import EMBEDDING, IMAGE, TEXT, TOKEN_COUNT, TOKEN_IDS, TRUNCATE

log = logging.getLogger("client.embed")


def shorten(vectors: np.ndarray, dimensions: int | None) -> np.ndarray:
    """Matryoshka truncation: keep the first `dimensions` components and re-normalise."""
    if dimensions is None or dimensions == vectors.shape[1]:
        return vectors
    cut = vectors[:, :dimensions]
    return cut / np.maximum(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12)


def encode_rows(vectors: np.ndarray, encoding_format: str) -> list[list[float]] | list[list[int]] | list[str]:
    """Number lists, or base64 of the rows' bytes: little-endian float32 as the openai SDK expects, or the
    compressed types' own bytes."""
    if vectors.dtype.kind == "f":
        vectors = vectors.astype("<f4", copy=False)
    if encoding_format == "base64":
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in vectors]
    return vectors.tolist()


def accepted(options: dict[str, str], controls: tuple[str, ...]) -> dict[str, str]:
    """The request's options an ensemble takes (its card's controls)."""
    return {k: v for k, v in options.items() if k in controls}


def _token_bytes(tokens: tuple[int, ...]) -> bytes:
    return np.asarray(tokens, dtype="<i8").tobytes()


class EmbedTask:
    def __init__(self, settings: Settings, inference: Inference, images: ImageLoader) -> None:
        self.settings = settings
        self.inference = inference
        self.images = images

    async def embed(self, request: EmbeddingRequest, timings: Timings | None = None) -> dict:
        timings = timings or Timings()
        model, vectors, tokens = await self.vectors(request, timings, (request.embedding_type,), "embedding_type")
        vectors = compress(vectors, request.embedding_type, model)
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": row}
                for i, row in enumerate(encode_rows(vectors, request.encoding_format))
            ],
            "model": model.name,  # the canonical id, whatever name the request used
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def vectors(
        self, request: EmbeddingRequest, timings: Timings, kinds: tuple[str, ...] = ("float",), param: str = ""
    ) -> tuple[ServedModel, np.ndarray, int]:
        """The request's vectors, cut to its `dimensions` and re-normalised, and its token count; every
        check first, the compressed `kinds` the response will take among them (every route that embeds
        shapes these: OpenAI's, Cohere's, vLLM's score)."""
        model = await self.inference.registry.resolve(request.model, "embed")
        timings.model = model.name
        items = items_of(request)
        self.images.check_count(sum(item.image is not None for item in items))  # before any text is sent
        check_token_options(request, items)
        check_modalities(model, items)
        check_token_ids(model, items)
        check_instruction(model, request.instruction)
        options = controls_of(request, self.settings)
        check_dimensions(request.dimensions, model, self.settings.allow_any_dimensions)
        for kind in kinds:
            check_compression(model, kind, request.dimensions or model.card.dimension, param or "embedding_type")
        vectors, tokens = await self._embed_items(model, items, options, timings)
        self.inference.succeeded(model)
        return model, shorten(vectors, request.dimensions), tokens

    async def _embed_items(
        self, model: ServedModel, items: list[Item], options: dict[str, str], timings: Timings
    ) -> tuple[np.ndarray, int]:
        """Route each item to its path, run the paths concurrently, reassemble in input order."""
        text_at = [i for i, item in enumerate(items) if item.image is None and item.tokens is None]
        token_at = [i for i, item in enumerate(items) if item.tokens is not None]
        image_at = [i for i, item in enumerate(items) if item.image is not None]
        card, run = model.card, self.inference.run

        async def texts():
            values = [items[i].text or "" for i in text_at]
            return await run(model, values, timings, options=accepted(options, card.controls), positions=text_at)

        async def token_ids():
            blobs = [_token_bytes(items[i].tokens or ()) for i in token_at]
            # Token ids bypass the template; TEXT is required by the ensemble, so it travels empty.
            plain = {TEXT: "", **accepted(options, (TRUNCATE,))}
            return await run(model, blobs, timings, options=plain, positions=token_at, tensor=TOKEN_IDS)

        async def images():
            sources = [items[i].image or "" for i in image_at]
            start = time.perf_counter()
            async with self.images.fetched(sources, image_at) as blobs:  # held until Triton has them
                timings.image_fetch += time.perf_counter() - start
                controls, columns = accepted(options, card.image_controls), None
                texts = [items[i].text or "" for i in image_at]
                if TEXT in card.image_controls and any(texts):  # each item's text goes into its image's prompt
                    columns = {TEXT: texts}
                return await run(
                    model,
                    blobs,
                    timings,
                    ensemble=card.image_ensemble,
                    max_batch=model.image_batch,
                    options=controls,
                    positions=image_at,
                    tensor=IMAGE,
                    columns=columns,
                )

        jobs = [(at, job()) for at, job in ((text_at, texts), (token_at, token_ids), (image_at, images)) if at]
        results = await all_or_cancel(*(coro for _, coro in jobs))
        out = np.empty((len(items), model.card.dimension), dtype=np.float32)
        tokens = 0
        for (positions, _), outputs in zip(jobs, results, strict=True):
            vectors = outputs[EMBEDDING]
            if vectors.shape != (len(positions), model.card.dimension):
                raise APIError(
                    500, f"Triton returned {vectors.shape} embeddings for {len(positions)} inputs", "internal_error"
                )
            out[positions] = vectors
            tokens += int(outputs[TOKEN_COUNT].sum())
        return out, tokens

    async def tokenize(self, request: TokenizeRequest, timings: Timings | None = None) -> dict:
        """Token ids exactly as the encoder sees them: template, special tokens and truncation applied."""
        timings = timings or Timings()
        model = await self.inference.registry.resolve(request.model, "embed")
        timings.model = model.name
        check_instruction(model, request.instruction)
        texts = texts_of(request)
        ids, counts = await self.inference.tokenize(model, texts, controls_of(request, self.settings), timings)
        rows = [row[:n].tolist() for row, n in zip(ids, counts, strict=True)]
        return {
            "model": model.name,
            "tokens": rows,
            "counts": [len(r) for r in rows],
            "total": int(sum(len(r) for r in rows)),
            "max_tokens": model.card.max_tokens,
        }

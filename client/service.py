"""The embeddings use case: validate a request, call Triton, encode the response."""

from __future__ import annotations

import asyncio
import base64
import logging

import numpy as np

from client.errors import APIError, bad_request, too_large
from client.images import ImageLoader
from client.protocol import EmbeddingRequest, MultimodalItem
from client.registry import ModelRegistry
from client.settings import Settings
from client.triton import ServedModel, TritonClient

log = logging.getLogger("client.service")


def items_of(request: EmbeddingRequest, max_items: int) -> list[MultimodalItem]:
    """The request's items (plain strings are text items), each non-empty, within the item cap."""
    raw = [request.input] if isinstance(request.input, str) else list(request.input)
    if not raw:
        raise bad_request("input cannot be an empty list", param="input")
    if len(raw) > max_items:
        raise too_large(f"input has {len(raw)} items; the maximum is {max_items}", param="input")
    items = [MultimodalItem(text=x) if isinstance(x, str) else x for x in raw]
    for i, item in enumerate(items):
        where = "input" if isinstance(request.input, str) else f"input[{i}]"
        if item.text is not None and not item.text.strip():
            raise bad_request(f"{where} cannot be empty or whitespace only", param="input")
        if item.image is not None and not item.image.strip():
            raise bad_request(f"{where}.image cannot be empty", param="input")
    return items


def check_modalities(model: ServedModel, items: list[MultimodalItem]) -> None:
    for i, item in enumerate(items):
        if item.image is not None and not model.image_ensemble:
            raise bad_request(f"input[{i}] holds an image, and model {model.name!r} embeds text only", "input")
        if item.image is not None and item.text is not None and not model.fuses_modalities:
            raise bad_request(
                f"input[{i}] holds both text and an image; model {model.name!r} does not fuse "
                "modalities (CLIP embeds each on its own tower): send them as separate items",
                "input",
            )


def encode_rows(vectors: np.ndarray, encoding_format: str) -> list[list[float]] | list[str]:
    """Float lists, or base64 of little-endian float32 as the openai SDK expects."""
    if encoding_format == "base64":
        data = vectors.astype("<f4", copy=False)
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in data]
    return vectors.astype(np.float32, copy=False).tolist()


class EmbeddingService:
    def __init__(self, settings: Settings, triton: TritonClient, registry: ModelRegistry, images: ImageLoader) -> None:
        self.settings = settings
        self.triton = triton
        self.registry = registry
        self.images = images

    async def embed(self, request: EmbeddingRequest) -> dict:
        if request.model_extra:
            log.info("ignoring unknown request fields: %s", ", ".join(sorted(request.model_extra)))
        model = await self.registry.resolve(request.model)
        if request.dimensions is not None and request.dimensions != model.dimension:
            raise bad_request(
                f"model {model.name!r} does not support matryoshka dimensions; it returns {model.dimension} "
                f"dimensions and dimensions={request.dimensions} was requested",
                param="dimensions",
            )
        items = items_of(request, self.settings.max_items_per_request)
        check_modalities(model, items)
        vectors, tokens = await self._embed_items(model, items, self.options(request))
        rows = encode_rows(vectors, request.encoding_format)
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)],
            "model": request.model or model.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def _embed_items(
        self, model: ServedModel, items: list[MultimodalItem], options: dict[str, str]
    ) -> tuple[np.ndarray, int]:
        """Route each item to its tower, run the towers concurrently, reassemble in input order."""
        text_at = [i for i, item in enumerate(items) if item.image is None]
        image_at = [i for i, item in enumerate(items) if item.image is not None]

        async def texts() -> tuple[np.ndarray, np.ndarray]:
            values = [items[i].text or "" for i in text_at]
            return await self.triton.embed(model.name, values, model.max_batch_size, options, text_at)

        async def images() -> tuple[np.ndarray, np.ndarray]:
            blobs = await self.images.load_all([items[i].image or "" for i in image_at], image_at)
            return await self.triton.embed(model.image_ensemble, blobs, model.max_batch_size, None, image_at, "IMAGE")

        jobs = [(text_at, texts()) if text_at else None, (image_at, images()) if image_at else None]
        jobs = [j for j in jobs if j is not None]
        results = await asyncio.gather(*(coro for _, coro in jobs))
        out = np.empty((len(items), model.dimension), dtype=np.float32)
        tokens = 0
        for (positions, _), (vectors, counts) in zip(jobs, results, strict=True):
            if vectors.shape != (len(positions), model.dimension):
                raise APIError(
                    500, f"Triton returned {vectors.shape} embeddings for {len(positions)} inputs", "internal_error"
                )
            out[positions] = vectors
            tokens += int(counts.sum())
        return out, tokens

    def options(self, request: EmbeddingRequest) -> dict[str, str]:
        """The optional ensemble inputs this request sets."""
        if request.instruction is not None and request.input_type == "document":
            raise bad_request("instruction applies to queries only; drop it or set input_type to query", "instruction")
        options = {}
        truncate = request.truncate or self.settings.default_truncate
        if truncate is not None:
            options["TRUNCATE"] = truncate
        if request.input_type is not None or request.instruction is not None:
            options["INPUT_TYPE"] = request.input_type or "query"
        if request.instruction is not None:
            if not request.instruction.strip():
                raise bad_request("instruction cannot be empty", "instruction")
            options["INSTRUCTION"] = request.instruction
        return options

    async def healthy(self) -> list[str]:
        """Names of models that answered a real one-text inference; raises when none is served."""
        models = await self.registry.refresh()
        if not models:
            raise APIError(503, "no embedding model is ready in Triton", "service_unavailable", None, "no_model")
        for model in models:
            await self.triton.embed(model.name, ["health check"], model.max_batch_size)
        return [m.name for m in models]

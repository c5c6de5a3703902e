"""The embeddings use case: validate a request, call Triton, encode the response."""

from __future__ import annotations

import base64
import logging

import numpy as np

from client.errors import APIError, bad_request, too_large
from client.protocol import EmbeddingRequest
from client.registry import ModelRegistry
from client.settings import Settings
from client.triton import TritonClient

log = logging.getLogger("client.service")


def texts_of(request: EmbeddingRequest, max_items: int) -> list[str]:
    """The request's texts, each non-empty, within the item cap."""
    texts = [request.input] if isinstance(request.input, str) else list(request.input)
    if not texts:
        raise bad_request("input cannot be an empty list", param="input")
    if len(texts) > max_items:
        raise too_large(f"input has {len(texts)} items; the maximum is {max_items}", param="input")
    for i, text in enumerate(texts):
        if not text.strip():
            where = "input" if isinstance(request.input, str) else f"input[{i}]"
            raise bad_request(f"{where} cannot be empty or whitespace only", param="input")
    return texts


def encode_rows(vectors: np.ndarray, encoding_format: str) -> list[list[float]] | list[str]:
    """Float lists, or base64 of little-endian float32 as the openai SDK expects."""
    if encoding_format == "base64":
        data = vectors.astype("<f4", copy=False)
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in data]
    return vectors.astype(np.float32, copy=False).tolist()


class EmbeddingService:
    def __init__(self, settings: Settings, triton: TritonClient, registry: ModelRegistry) -> None:
        self.settings = settings
        self.triton = triton
        self.registry = registry

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
        texts = texts_of(request, self.settings.max_items_per_request)
        vectors, counts = await self.triton.embed(model, texts, self.options(request))
        if vectors.shape[0] != len(texts):
            raise APIError(500, f"Triton returned {vectors.shape[0]} embeddings for {len(texts)} inputs", "internal_error")
        tokens = int(counts.sum())
        rows = encode_rows(vectors, request.encoding_format)
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)],
            "model": request.model or model.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

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
            await self.triton.embed(model, ["health check"])
        return [m.name for m in models]

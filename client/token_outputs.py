"""The tasks whose outputs are not one vector a row: sparse lexical weights (TEI's `POST /embed_sparse`) and
multi-vector output (vLLM's `POST /pooling` with `"task": "token_embed"`). Request and response models,
checks and response shaping are here; Triton through the inference core, which asks the ensemble only
for the task's outputs (the contract's task table), so a request pays on the wire for what it gets.

Sparse rows arrive as entries, ids and weights: BGE-M3's one per token (the head zeroes special tokens
and padding), 12 bytes per token on the wire; SPLADE's one per non-zero vocabulary id (its host drops
the zeros). Here, as FlagEmbedding's `_process_token_weights` does, each id keeps its largest weight
and only weights > 0 remain, in index order. Multi-vector rows arrive as a vector per position with CLS
zeroed: a text of n tokens gets the vectors of positions 1 … n−1 (FlagEmbedding's `vecs[:n-1]` of
`h[:, 1:]`).
"""

from __future__ import annotations

import time
import uuid
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from client.embed import EmbedTask
from client.errors import bad_request, too_large
from client.inference import Inference, Timings
from client.protocol import EmbeddingRequest, TeiTruncation, VllmTruncation
from client.settings import Settings
from client.triton import ServedModel
from client.validation import truncation
from contract import SPARSE_IDS, SPARSE_WEIGHTS, TOKEN_COUNT, TOKEN_VECTORS


class EmbedSparseRequest(TeiTruncation):
    """TEI's `POST /embed_sparse`: no `model` in TEI (the only sparse model answers); with several, it picks."""

    items: ClassVar[str] = "inputs"

    model: str | None = None
    inputs: str | list[str]


class PoolingRequest(VllmTruncation):
    """vLLM's `POST /pooling` (`task` picks the pooling; token_embed: one vector per token)."""

    model: str | None = None
    input: str | list[str]
    task: str = Field("token_embed", description="token_embed (one vector per token); embed (one per input)")
    encoding_format: Literal["float"] = "float"


def _texts(value: str | list[str], param: str) -> list[str]:
    texts = [value] if isinstance(value, str) else list(value)
    if not texts:
        raise bad_request(f"{param} cannot be an empty list", param)
    return texts


FRAME_TOKENS = 8  # room for the special tokens a tokenizer frames a text with


def check_token_vectors(texts: list[str], model: ServedModel, settings: Settings, param: str) -> None:
    """The per-token vectors `texts` can ask for within `max_token_vectors_per_request`, checked before any
    inference: a text makes at most one token per UTF-8 byte (every tokenizer we serve) plus its frame, and
    at most the model's limit (a longer one is cut, or refused under NONE)."""
    limit, budget = model.card.max_tokens, settings.max_token_vectors_per_request
    most = sum(min(len(t.encode("utf-8")) + FRAME_TOKENS, limit) for t in texts)
    if most > budget:
        raise too_large(
            f"these texts may make up to {most} token vectors; the maximum is {budget} a request (send fewer "
            "or shorter texts)",
            param,
        )


def sparse_rows(ids: np.ndarray, weights: np.ndarray) -> list[list[dict]]:
    """Each row's `{index, value}` entries: an id's largest weight, weights > 0 only, by index."""
    rows = []
    for i, w in zip(ids, weights, strict=True):
        kept = w > 0
        i, w = i[kept], w[kept]
        order = np.lexsort((-w, i))  # by id, its largest weight first
        i, w = i[order], w[order]
        first = np.ones(len(i), dtype=bool)
        first[1:] = i[1:] != i[:-1]
        rows.append([{"index": int(a), "value": float(b)} for a, b in zip(i[first], w[first], strict=True)])
    return rows


class TokenOutputs:
    def __init__(self, settings: Settings, inference: Inference, embed: EmbedTask) -> None:
        self.settings = settings
        self.inference = inference
        self.embed = embed  # /pooling's `embed`: the embed task's own vectors, its checks included

    async def embed_sparse(self, request: EmbedSparseRequest, timings: Timings) -> tuple[list[list[dict]], int]:
        """TEI's answer (one list per input, a single string included) and the tokens it counted."""
        model = await self.inference.registry.resolve(request.model, "sparse")
        timings.model = model.name
        texts = _texts(request.inputs, "inputs")
        out = await self.inference.run(
            model,
            texts,
            timings,
            options=truncation(request.truncate_mode(), self.settings),
            field="inputs",
            task="sparse",
        )
        self.inference.succeeded(model)
        return sparse_rows(out[SPARSE_IDS], out[SPARSE_WEIGHTS]), int(out[TOKEN_COUNT].sum())

    async def pool(self, request: PoolingRequest, timings: Timings) -> dict:
        """vLLM's pooling response: each input's vectors (token_embed), or its one vector (embed)."""
        if request.task not in ("token_embed", "embed"):
            raise bad_request(f"task must be token_embed or embed, got {request.task!r}", "task")
        texts = _texts(request.input, "input")
        if request.task == "embed":
            model, vectors, tokens = await self.embed.vectors(
                EmbeddingRequest(model=request.model, input=texts), timings
            )
            data = vectors.tolist()
        else:
            model = await self.inference.registry.resolve(request.model, "multivector")
            timings.model = model.name
            check_token_vectors(texts, model, self.settings, "input")
            options = truncation(None, self.settings)
            out = await self.inference.run(model, texts, timings, options=options, task="multivector")
            self.inference.succeeded(model)
            counts = out[TOKEN_COUNT].reshape(-1)
            data = [rows[1:n].tolist() for rows, n in zip(out[TOKEN_VECTORS], counts, strict=True)]
            tokens = int(counts.sum())
        return {
            "id": f"pool-{uuid.uuid4().hex}",
            "object": "list",
            "created": int(time.time()),
            "model": model.name,
            "data": [{"index": i, "object": "pooling", "data": d} for i, d in enumerate(data)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
        }

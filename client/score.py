"""vLLM's score API (`POST /score`, `/v1/score`): `text_1` against `text_2`, one score per pair. A reranker
(a cross-encoder, Qwen3-Reranker, or a multi-vector model by MaxSim) scores each pair as `/v1/rerank`
does, its relevance score (the sigmoid of the logit, as vLLM applies it); an embedding model gives the
cosine of the two texts' embeddings, as vLLM does for embedding models. Pairs follow vLLM's rule: one
`text_1` against every `text_2`, or lists of equal length pair by position.
"""

from __future__ import annotations

import time
import uuid
from typing import ClassVar

import numpy as np
from pydantic import Field

from client.embed import EmbedTask
from client.errors import bad_request
from client.inference import Inference, Timings
from client.protocol import EmbeddingRequest, VllmTruncation
from client.rerank import rank, rerank_options
from client.tasks import all_or_cancel


class ScoreRequest(VllmTruncation):
    """`POST /score` and `/v1/score` in vLLM's shape."""

    items: ClassVar[str] = "text_2"
    max_items: ClassVar[str] = "max_documents_per_request"

    model: str | None = None
    text_1: str | list[str] = Field(description="the query, or one text per pair")
    text_2: str | list[str] = Field(description="the documents, or one text per pair")


def pairs_of(request: ScoreRequest) -> list[tuple[str, str]]:
    first = [request.text_1] if isinstance(request.text_1, str) else list(request.text_1)
    second = [request.text_2] if isinstance(request.text_2, str) else list(request.text_2)
    if not first or not second:
        raise bad_request("text_1 and text_2 cannot be empty lists", "text_1" if not first else "text_2")
    if len(first) == 1:
        first = first * len(second)
    if len(first) != len(second):
        raise bad_request(
            f"text_1 has {len(first)} texts and text_2 {len(second)}: give one text_1, or as many as text_2",
            "text_1",
        )
    return list(zip(first, second, strict=True))


async def score(inference: Inference, embed: EmbedTask, request: ScoreRequest, timings: Timings) -> dict:
    pairs = pairs_of(request)
    model = await inference.registry.resolve(request.model)
    timings.model = model.name
    if model.card.serves("rerank"):
        scores, tokens = await _reranked(inference, model.name, pairs, timings)
    else:
        scores, tokens = await _cosines(embed, model.name, pairs, timings)
    return {
        "id": f"score-{uuid.uuid4().hex}",
        "object": "list",
        "created": int(time.time()),
        "model": model.name,
        "data": [{"index": i, "object": "score", "score": float(s)} for i, s in enumerate(scores)],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
    }


async def _reranked(
    inference: Inference, name: str, pairs: list[tuple[str, str]], timings: Timings
) -> tuple[np.ndarray, int]:
    """Each distinct query's documents in one ranking (all queries at once), scattered back by pair."""
    by_query: dict[str, list[int]] = {}
    for i, (query, _) in enumerate(pairs):
        by_query.setdefault(query, []).append(i)
    options = rerank_options(inference.settings, None, None)
    rankings = await all_or_cancel(
        *(rank(inference, name, q, [pairs[i][1] for i in at], options, timings) for q, at in by_query.items())
    )
    scores = np.empty(len(pairs))
    for at, ranking in zip(by_query.values(), rankings, strict=True):
        scores[at] = ranking.scores(raw=False)
    timings.tokens = sum(r.tokens for r in rankings)
    return scores, timings.tokens


async def _cosines(
    embed: EmbedTask, name: str, pairs: list[tuple[str, str]], timings: Timings
) -> tuple[np.ndarray, int]:
    """The cosine of each pair's two embeddings (each distinct text embedded once, as a document)."""
    texts = list(dict.fromkeys(t for pair in pairs for t in pair))
    _, vectors, tokens = await embed.vectors(EmbeddingRequest(model=name, input=texts), timings)
    vectors = vectors.astype(np.float64)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    where = {t: i for i, t in enumerate(texts)}
    scores = np.array([vectors[where[a]] @ vectors[where[b]] for a, b in pairs])
    return scores, tokens

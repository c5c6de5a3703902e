"""The rerank task: score (query, document) pairs on a reranker's ensemble, best first.

One request's documents go through the coalescer like embedding items: each row carries its own
query (the QUERY column), so pairs of concurrent requests share Triton calls, and a large request is
split and reassembled in order. The ensemble returns raw scores (the classifier's logit); the
relevance score is their sigmoid unless `raw_scores` (sentence-transformers' `CrossEncoder.predict`,
TEI, infinity and vLLM do the same for one label).

A multi-vector model (BGE-M3) reranks by late interaction instead: the query and the documents are
encoded apart (the multivector task), and each score is FlagEmbedding's `colbert_score`, the mean over
the query's vectors of each one's best dot product with the document's: in [-1, 1], and the relevance
score as it is (no sigmoid).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from client.errors import APIError, bad_request, too_large
from client.inference import Inference, Timings
from client.protocol import NimRankingRequest, RerankRequest, TeiRerankRequest
from client.settings import Settings
from client.tasks import all_or_cancel
from client.token_outputs import check_token_vectors
from client.triton import ServedModel
from client.validation import truncation
from contract import INSTRUCTION, MAX_DOC_TOKENS, QUERY, SCORE, TOKEN_COUNT, TOKEN_VECTORS, TRUNCATE

log = logging.getLogger("client.rerank")


@dataclass(frozen=True)
class Ranking:
    """Every document's raw score and the request's token count; `order` is best first."""

    model: str
    raw: np.ndarray  # float64 [n]
    tokens: int
    logits: bool = True  # raw scores are logits, whose sigmoid is the relevance (MaxSim's are not)

    @property
    def order(self) -> list[int]:
        return np.argsort(-self.raw, kind="stable").tolist()

    def scores(self, raw: bool) -> np.ndarray:
        return self.raw if raw or not self.logits else 1.0 / (1.0 + np.exp(-self.raw))


async def rank(
    inference: Inference,
    model_name: str | None,
    query: str,
    documents: list[str],
    options: dict[str, str],
    timings: Timings,
    instruction: str | None = None,
) -> Ranking:
    """Score `documents` against `query` on the named (or only) reranker."""
    settings = inference.settings
    model = await inference.registry.resolve(model_name, "rerank")
    timings.model = model.name
    if not query.strip():
        raise bad_request("query cannot be empty or whitespace only", "query")
    if len(query) > settings.max_query_chars:
        raise too_large(f"query has {len(query)} characters; the maximum is {settings.max_query_chars}", "query")
    if not documents:
        raise bad_request("documents cannot be an empty list", "documents")
    repeated = len(query.encode("utf-8")) * len(documents)
    if repeated > settings.max_query_document_bytes:
        raise too_large(
            f"the query ({repeated // len(documents)} bytes) beside each of {len(documents)} documents makes "
            f"{repeated} bytes of pairs; the maximum is {settings.max_query_document_bytes} (shorten the query "
            "or send fewer documents)",
            "query",
        )
    for i, document in enumerate(documents):
        if not document.strip():  # an empty one is no pair to the reference tokenizer
            raise bad_request(f"documents[{i}] cannot be empty or whitespace only", "documents")
    if model.card.task != "rerank":
        return await _late_interaction(inference, model, query, documents, options, timings, instruction)
    if instruction is not None:
        if INSTRUCTION not in model.card.controls:
            raise bad_request(f"model {model.name!r} takes no instruction; drop it", "instruction")
        if not instruction.strip():
            raise bad_request("instruction cannot be empty", "instruction")
        options = {**options, INSTRUCTION: instruction}
    if MAX_DOC_TOKENS in options and MAX_DOC_TOKENS not in model.card.controls:
        raise bad_request(
            f"model {model.name!r} words each pair as one prompt, so max_tokens_per_doc cannot cut the "
            "document alone; drop it (the pair is cut to the model's limit)",
            "max_tokens_per_doc",
        )
    outputs = await inference.run(
        model,
        documents,
        timings,
        options={k: v for k, v in options.items() if k in model.card.controls},
        columns={QUERY: [query] * len(documents)},
        field="documents",
    )
    scores = outputs[SCORE]
    if scores.shape != (len(documents), 1):
        raise APIError(500, f"Triton returned {scores.shape} scores for {len(documents)} documents", "internal_error")
    inference.succeeded(model)
    timings.tokens = int(outputs[TOKEN_COUNT].sum())
    return Ranking(model.name, scores[:, 0].astype(np.float64), timings.tokens)


async def _late_interaction(
    inference: Inference,
    model: ServedModel,
    query: str,
    documents: list[str],
    options: dict[str, str],
    timings: Timings,
    instruction: str | None,
) -> Ranking:
    """MaxSim over the multivector task's outputs: the query encoded once, each document apart."""
    if instruction is not None:
        raise bad_request(f"model {model.name!r} scores by MaxSim and takes no instruction; drop it", "instruction")
    if MAX_DOC_TOKENS in options:
        raise bad_request(
            f"model {model.name!r} scores by MaxSim: max_tokens_per_doc is not applied; drop it (each document is "
            "cut to the model's limit)",
            "max_tokens_per_doc",
        )
    check_token_vectors([query, *documents], model, inference.settings, "documents")
    plain = {k: v for k, v in options.items() if k == TRUNCATE}
    run = inference.run
    asked, answered = await all_or_cancel(
        run(model, [query], timings, options=plain, field="query", task="multivector"),
        run(model, documents, timings, options=plain, field="documents", task="multivector"),
    )
    q_count, counts = int(asked[TOKEN_COUNT].reshape(-1)[0]), answered[TOKEN_COUNT].reshape(-1)
    q = asked[TOKEN_VECTORS][0, 1:q_count]  # positions 1 … n−1: CLS dropped (FlagEmbedding's vecs[:n-1])
    scores = np.array(
        [float((q @ d[1:n].T).max(axis=1).mean()) for d, n in zip(answered[TOKEN_VECTORS], counts, strict=True)]
    )
    inference.succeeded(model)
    timings.tokens = q_count + int(counts.sum())
    return Ranking(model.name, scores, timings.tokens, logits=False)


def rerank_options(settings: Settings, truncate: str | None, max_tokens_per_doc: int | None) -> dict[str, str]:
    options = truncation(truncate, settings)
    if max_tokens_per_doc is not None:
        options[MAX_DOC_TOKENS] = str(max_tokens_per_doc)
    return options


async def cohere_rerank(
    inference: Inference, request: RerankRequest, timings: Timings, version: str, request_id: str
) -> dict:
    """`/v1/rerank`, `/v2/rerank`: Cohere's response (`id`, `results`, `meta`) with Jina's `model` and `usage`."""
    settings = inference.settings
    if request.instruction is not None and len(request.instruction) > settings.max_instruction_chars:
        raise too_large(
            f"instruction has {len(request.instruction)} characters; the maximum is {settings.max_instruction_chars}",
            "instruction",
        )
    texts = request.texts()
    options = rerank_options(settings, request.truncate, request.max_tokens_per_doc)
    ranking = await rank(inference, request.model, request.query, texts, options, timings, request.instruction)
    scores = ranking.scores(request.raw_scores)
    results = []
    for i in ranking.order[: request.top_n]:
        result: dict = {"index": i, "relevance_score": float(scores[i])}
        if request.return_documents:
            result["document"] = {"text": texts[i]}
        results.append(result)
    return {
        "id": request_id,
        "model": ranking.model,
        "results": results,
        "usage": {"prompt_tokens": ranking.tokens, "total_tokens": ranking.tokens},
        "meta": {
            "api_version": {"version": version},
            "billed_units": {"search_units": 1, "input_tokens": ranking.tokens},
        },
    }


async def nim_ranking(inference: Inference, request: NimRankingRequest, timings: Timings) -> dict:
    """`/v1/ranking`: NIM's `{"rankings": [{"index", "logit"}]}`, best first (the raw score: a logit)."""
    options = rerank_options(inference.settings, request.truncate, None)
    passages = [p.text for p in request.passages]
    ranking = await rank(inference, request.model, request.query.text, passages, options, timings)
    return {"rankings": [{"index": i, "logit": float(ranking.raw[i])} for i in ranking.order]}


async def tei_rerank(inference: Inference, request: TeiRerankRequest, timings: Timings) -> list[dict]:
    """`/rerank`: TEI's bare array of `{index, score, text?}`, best first."""
    options = rerank_options(inference.settings, request.truncate_mode(), None)
    ranking = await rank(inference, request.model, request.query, request.texts, options, timings)
    scores = ranking.scores(request.raw_scores)
    out = []
    for i in ranking.order:
        item: dict = {"index": i, "score": float(scores[i])}
        if request.return_text:
            item["text"] = request.texts[i]
        out.append(item)
    return out

"""HTTP routes: no logic here, only the mapping to the task modules, timing headers and metrics."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from client import request_id
from client.cohere_embed import CohereEmbedRequest, CohereEmbedRequestV1, cohere_embed
from client.embed import EmbedTask
from client.errors import APIError, invalid_fields, too_large
from client.inference import UNRESOLVED, Inference, Timings, request_priority
from client.protocol import (
    EmbeddingRequest,
    EmbeddingResponse,
    ModelCard,
    ModelList,
    NimRankingRequest,
    RerankRequest,
    TeiRerankRequest,
    TokenizeRequest,
    one_id_list,
)
from client.protocol import Request as RequestBody
from client.rerank import cohere_rerank, nim_ranking, tei_rerank
from client.responses import JSONResponse
from client.score import ScoreRequest, score
from client.token_outputs import EmbedSparseRequest, PoolingRequest, TokenOutputs
from client.triton import ServedModel

router = APIRouter()
Body = TypeVar("Body", bound=RequestBody)


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """Replace `{"$ref": "#/$defs/X"}` by the definition itself (the schema must stand alone in OpenAPI)."""
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
        return {k: _inline(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Document the JSON body in OpenAPI while the route parses it itself."""
    schema = model.model_json_schema()
    schema = _inline(schema, schema.get("$defs", {}))
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


async def parse_body(request: Request, model: type[Body]) -> Body:
    """The JSON body (the gate has read it within the size cap), its values counted before it is parsed
    and its items counted before they are validated, here only; large bodies are parsed off the event loop."""
    raw = await request.body()
    settings = request.app.state.settings
    field, max_items = model.items, getattr(settings, model.max_items)

    def validate(data: Any) -> Body:
        request.state.named_model = data.get("model") if isinstance(data, dict) else None  # for the metrics label
        items = data.get(field) if isinstance(data, dict) else None
        ids = field == "input" and one_id_list(items)
        if isinstance(items, list) and len(items) > max_items and not ids:
            raise too_large(f"{field} has {len(items)} items; the maximum is {max_items}", param=field)
        if isinstance(items, list) and field == "input":
            check_id_lengths(items, ids, settings.max_token_ids_per_item)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise invalid_fields(list(exc.errors())) from exc

    body = await request.app.state.parser.parse(raw, max_items, validate)
    request_priority.set(body.priority)  # every Triton call of this request carries its level
    return body


def check_id_lengths(items: list, one_id_list: bool, limit: int) -> None:
    """Token-id lists within their bound before a single id is validated."""
    lists = (
        [("input", items)] if one_id_list else [(f"input[{i}]", x) for i, x in enumerate(items) if isinstance(x, list)]
    )
    for where, ids in lists:
        if len(ids) > limit:
            raise too_large(f"{where} has {len(ids)} token ids; the maximum is {limit}", param="input")


def _inference(request: Request) -> Inference:
    return request.app.state.inference


def _embed(request: Request) -> EmbedTask:
    return request.app.state.embed


def _timing_headers(start: float, timings: Timings) -> dict[str, str]:
    """TEI-style timing headers, in milliseconds."""
    total = (time.perf_counter() - start) * 1000
    triton, fetch = timings.triton * 1000, timings.image_fetch * 1000
    return {
        "x-total-time": f"{total:.1f}",
        "x-triton-time": f"{triton:.1f}",
        "x-image-fetch-time": f"{fetch:.1f}",
        "x-adapter-time": f"{max(total - triton - fetch, 0):.1f}",
    }


def _named_model(request: Request) -> str:
    """For a body that failed validation: the served model it names, if any (a bounded label set)."""
    named = getattr(request.state, "named_model", None)
    return _inference(request).registry.known(named) or UNRESOLVED


@asynccontextmanager
async def _measured(request: Request, route: str, timings: Timings):
    """Count the request and its time under the served model's name (`unknown` before resolution)."""
    start, metrics, status = time.perf_counter(), request.app.state.metrics, 500
    try:
        yield
        status = 200
    except APIError as exc:
        status = exc.status
        if timings.model == UNRESOLVED and exc.status == 400:
            timings.model = _named_model(request)
        raise
    finally:
        model = timings.model
        metrics.requests.labels(route, model, str(status)).inc()
        metrics.latency.labels(route, model).observe(time.perf_counter() - start)
        if timings.triton:  # no Triton stage when no Triton call ran
            metrics.stage.labels("triton", model).observe(timings.triton)
        if timings.image_fetch:
            metrics.stage.labels("image_fetch", model).observe(timings.image_fetch)


@router.post("/v1/embeddings", response_model=EmbeddingResponse, openapi_extra=_body_schema(EmbeddingRequest))
async def create_embeddings(request: Request):
    start, timings = time.perf_counter(), Timings()
    async with _measured(request, "embeddings", timings):
        result = await _embed(request).embed(await parse_body(request, EmbeddingRequest), timings)
    _count(request, timings, len(result["data"]), result["usage"]["prompt_tokens"])
    return JSONResponse(result, headers=_timing_headers(start, timings))


# The hot path, dispatched by the gate straight to its function (client/app.py): the same code as
# through FastAPI's router, without the router's per-request work (route matching, dependency solving,
# its telemetry hooks), a fifth of the adapter's CPU time for a short query.
DIRECT: dict[tuple[str, str], Any] = {("POST", "/v1/embeddings"): create_embeddings}


@router.post("/v1/rerank", openapi_extra=_body_schema(RerankRequest))
async def rerank_v1(request: Request):
    """Cohere v1 / Jina rerank: documents scored against the query, best first."""
    return await _cohere(request, "1")


@router.post("/v2/rerank", openapi_extra=_body_schema(RerankRequest))
async def rerank_v2(request: Request):
    """Cohere v2 rerank (`cohere.ClientV2(base_url=…).rerank`)."""
    return await _cohere(request, "2")


async def _cohere(request: Request, version: str):
    async def task(body: RerankRequest, timings: Timings) -> Answer:
        result = await cohere_rerank(_inference(request), body, timings, version, request_id.current.get())
        return Answer(result, len(body.documents), result["usage"]["prompt_tokens"])

    return await _answered(request, "rerank", RerankRequest, task)


@router.post("/rerank", openapi_extra=_body_schema(TeiRerankRequest))
async def rerank_tei(request: Request):
    """text-embeddings-inference's rerank: a bare array of `{index, score, text?}`, best first."""

    async def task(body: TeiRerankRequest, timings: Timings) -> Answer:
        return Answer(await tei_rerank(_inference(request), body, timings), len(body.texts), timings.tokens)

    return await _answered(request, "rerank", TeiRerankRequest, task)


@router.post("/v2/embed", openapi_extra=_body_schema(CohereEmbedRequest))
async def embed_cohere(request: Request):
    """Cohere's embed v2 (`cohere.ClientV2.embed`): every requested embedding type from one inference."""
    return await _cohere_embed(request, CohereEmbedRequest)


@router.post("/v1/embed", openapi_extra=_body_schema(CohereEmbedRequestV1))
async def embed_cohere_v1(request: Request):
    """Cohere's embed v1 (`cohere.Client.embed`, LangChain's `CohereEmbeddings`)."""
    return await _cohere_embed(request, CohereEmbedRequestV1)


async def _cohere_embed(request: Request, model: type[CohereEmbedRequest]):
    async def task(body: CohereEmbedRequest, timings: Timings) -> Answer:
        result = await cohere_embed(_embed(request), body, timings)
        items = len(body.texts or body.images or ())
        return Answer(result, items, result["meta"]["billed_units"]["input_tokens"])

    return await _answered(request, "embeddings", model, task)


@router.post("/v1/ranking", openapi_extra=_body_schema(NimRankingRequest))
async def ranking_nim(request: Request):
    """NVIDIA NIM's reranking: `{"rankings": [{"index", "logit"}]}`, best first."""

    async def task(body: NimRankingRequest, timings: Timings) -> Answer:
        return Answer(await nim_ranking(_inference(request), body, timings), len(body.passages), timings.tokens)

    return await _answered(request, "rerank", NimRankingRequest, task)


@router.post("/score", openapi_extra=_body_schema(ScoreRequest))
@router.post("/v1/score", openapi_extra=_body_schema(ScoreRequest))
async def score_vllm(request: Request):
    """vLLM's score API: a reranker's relevance score of each pair, or an embedder's cosine."""

    async def task(body: ScoreRequest, timings: Timings) -> Answer:
        result = await score(_inference(request), _embed(request), body, timings)
        return Answer(result, len(result["data"]), result["usage"]["prompt_tokens"])

    return await _answered(request, "score", ScoreRequest, task)


def _token_outputs(request: Request) -> TokenOutputs:
    return request.app.state.token_outputs


@router.post("/embed_sparse", openapi_extra=_body_schema(EmbedSparseRequest))
async def embed_sparse(request: Request):
    """text-embeddings-inference's sparse embeddings: per input, its non-zero `{index, value}` by index."""

    async def task(body: EmbedSparseRequest, timings: Timings) -> Answer:
        rows, tokens = await _token_outputs(request).embed_sparse(body, timings)
        return Answer(rows, len(rows), tokens, {"x-compute-tokens": str(tokens)})

    return await _answered(request, "embed_sparse", EmbedSparseRequest, task)


@router.post("/pooling", openapi_extra=_body_schema(PoolingRequest))
async def pooling(request: Request):
    """vLLM's pooling: `token_embed`, one vector per token (multi-vector models); `embed`, one per input."""

    async def task(body: PoolingRequest, timings: Timings) -> Answer:
        result = await _token_outputs(request).pool(body, timings)
        return Answer(result, len(result["data"]), result["usage"]["prompt_tokens"])

    return await _answered(request, "pooling", PoolingRequest, task)


@dataclass(frozen=True)
class Answer:
    """What a task gives its route: the response body, the items and tokens the metrics count, and any
    headers of its API (TEI's `x-compute-tokens`)."""

    body: Any
    items: int
    tokens: int
    headers: dict[str, str] = field(default_factory=dict)


async def _answered(
    request: Request, route: str, model: type[Body], task: Callable[[Body, Timings], Awaitable[Answer]]
) -> JSONResponse:
    """Every inference route's frame: the body parsed once, the task run under the route's metrics, its
    items and tokens counted, the timing headers. (`/v1/embeddings` spells the same frame out: the gate
    dispatches it directly, and it is the hot path.)"""
    start, timings = time.perf_counter(), Timings()
    async with _measured(request, route, timings):
        answer = await task(await parse_body(request, model), timings)
    _count(request, timings, answer.items, answer.tokens)
    return JSONResponse(answer.body, headers={**_timing_headers(start, timings), **answer.headers})


def _count(request: Request, timings: Timings, items: int, tokens: int) -> None:
    metrics = request.app.state.metrics
    metrics.items.labels(timings.model).inc(items)
    metrics.tokens.labels(timings.model).inc(tokens)


@router.post("/tokenize", openapi_extra=_body_schema(TokenizeRequest))
@router.post("/v1/tokenize", openapi_extra=_body_schema(TokenizeRequest))
async def tokenize(request: Request):
    timings = Timings()
    async with _measured(request, "tokenize", timings):
        return await _embed(request).tokenize(await parse_body(request, TokenizeRequest), timings)


def _card(m: ServedModel) -> dict:
    """One model as OpenAI lists it (`id`: the served name, which responses use too), and what it can do."""
    return {
        "id": m.name,
        "object": "model",
        "created": 0,
        "owned_by": "triton",
        "hf_id": m.card.hf_id or None,
        "aliases": list(m.card.aliases),
        "dimension": m.card.dimension,
        "matryoshka_dimensions": list(m.card.matryoshka_dimensions),
        "matryoshka_min_dimension": m.card.matryoshka_min_dimension or None,
        "max_tokens": m.card.max_tokens,
        "modalities": list(m.card.modalities),
        "query_template": m.card.query_template,
        "task": m.card.task,
        "tasks": [m.card.task, *m.card.tasks],
        "engine": m.card.engine or None,
        "engine_candidates": [_candidate(c) for c in m.card.engine_candidates],
        "int8_ranges": _ranges(m.card.int8_ranges),
    }


def _ranges(flat: tuple[float, ...]) -> list[list[float]] | None:
    """The card's int8 calibration, minimums then maximums, as `quantize_embeddings` takes `ranges`."""
    half = len(flat) // 2
    return [list(flat[:half]), list(flat[half:])] if flat else None


def _candidate(figures: str) -> dict:
    """`torch bfloat16:488.4:0.9999833:pass` (the card's form) as the API shows it."""
    engine, speed, cosine, gate = figures.rsplit(":", 3)
    return {"engine": engine, "texts_per_second": float(speed), "min_cosine": float(cosine), "gate": gate}


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request):
    return {"object": "list", "data": [_card(m) for m in await _inference(request).registry.models()]}


@router.get("/v1/models/{name:path}", response_model=ModelCard)
async def retrieve_model(name: str, request: Request):
    """Any accepted name: the served name, the Hugging Face id or an alias."""
    return _card(await _inference(request).registry.resolve(name))


@router.get("/health")
async def health():
    """Liveness: the adapter process answers."""
    return {"status": "ok"}


@router.get("/health/ready")
async def ready(request: Request):
    """Readiness: every adapter worker is serving, and every served model answered a real inference
    recently (stale ones are probed now)."""
    workers = request.app.state.workers
    if workers is not None and (ready := workers.ready()) < workers.count:
        raise APIError(
            503, f"not ready: {ready} of {workers.count} adapter workers serving", "service_unavailable", exposed=True
        )
    try:
        names = await _inference(request).ready()
    except APIError as exc:
        raise APIError(503, f"not ready: {exc.message}", "service_unavailable", None, exc.code, exc.exposed) from exc
    return {"status": "ready", "models": names}


@router.get("/metrics")
async def metrics(request: Request):
    return Response(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4")

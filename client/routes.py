"""HTTP routes: no logic here, only the mapping to the service."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ValidationError

from client.errors import APIError, bad_request
from client.protocol import EmbeddingRequest, EmbeddingResponse, ModelList
from client.service import EmbeddingService

router = APIRouter()


Body = TypeVar("Body", bound=BaseModel)


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Document the JSON body in OpenAPI while the route parses it itself."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


async def parse_body(request: Request, model: type[Body]) -> Body:
    """The body as JSON whatever its Content-Type (curl -d sends form encoding)."""
    try:
        data = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"request body is not valid JSON: {exc}") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        message = first["msg"].removeprefix("Value error, ")
        raise bad_request(
            message if message.startswith(param or "\0") else f"{param or 'body'}: {message}", param=param
        ) from exc


def _service(request: Request) -> EmbeddingService:
    return request.app.state.service


@router.post("/v1/embeddings", response_model=EmbeddingResponse, openapi_extra=_body_schema(EmbeddingRequest))
async def create_embeddings(request: Request):
    return await _service(request).embed(await parse_body(request, EmbeddingRequest))


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request):
    models = await _service(request).registry.models()
    return {
        "object": "list",
        "data": [
            {
                "id": m.hf_id or m.name,
                "object": "model",
                "created": 0,
                "owned_by": "triton",
                "aliases": [n for n in m.names if n != (m.hf_id or m.name)],
                "dimension": m.dimension,
                "max_tokens": m.max_tokens,
                "modalities": list(m.modalities),
            }
            for m in models
        ],
    }


@router.get("/health")
async def health(request: Request):
    try:
        names = await _service(request).healthy()
    except APIError as exc:
        raise APIError(503, f"not healthy: {exc.message}", "service_unavailable", None, exc.code) from exc
    return {"status": "ok", "models": names}

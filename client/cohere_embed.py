"""Cohere's embed, v2 (`POST /v2/embed`, what `cohere.ClientV2.embed` sends) and v1 (`POST /v1/embed`, what
`cohere.Client.embed` and LangChain's `CohereEmbeddings` send): a response shaping of the embed task,
every requested `embedding_types` from one inference.

- `texts`, or `images` as data URIs for a model with an image tower;
- `input_type`: `search_query` takes the model's query template, `search_document`, `classification`
  and `clustering` embed as documents (a model with no query template embeds all four the same way);
  `image` goes with `images`;
- `embedding_types`: `float`, `base64` (little-endian float32), and the compressed `int8`, `uint8`,
  `binary`, `ubinary` (client/compression.py);
- `truncate` (`NONE`, `START`, `END`; Cohere's default END), `output_dimension` (Matryoshka models).

v1 differs in two fields only: `input_type` may be left out (documents), and without `embedding_types`
the answer is v1's `embeddings_floats` shape (`embeddings` a bare list of float vectors).
"""

from __future__ import annotations

import base64
import uuid
from typing import ClassVar, Literal

from pydantic import Field, ValidationError

from client.compression import compress
from client.embed import EmbedTask, encode_rows
from client.errors import bad_request, invalid_fields
from client.inference import Timings
from client.protocol import EmbeddingRequest, Request
from contract import Truncate

CohereInputType = Literal["search_document", "search_query", "classification", "clustering", "image"]
CohereEmbeddingType = Literal["float", "int8", "uint8", "binary", "ubinary", "base64"]


class CohereEmbedRequest(Request):
    """`POST /v2/embed` in Cohere's shape."""

    items: ClassVar[str] = "texts"

    model: str | None = None
    input_type: CohereInputType
    texts: list[str] | None = None
    images: list[str] | None = Field(None, description="data URIs, for a model with an image tower")
    embedding_types: list[CohereEmbeddingType] = Field(default_factory=lambda: ["float"])
    truncate: Truncate | None = "END"  # null is Cohere's default too (LangChain sends it)
    output_dimension: int | None = None
    max_tokens: int | None = Field(None, description="not supported: each input is cut to the model's limit")


class CohereEmbedRequestV1(CohereEmbedRequest):
    """`POST /v1/embed` in Cohere's shape: v2's fields, `input_type` and `embedding_types` optional."""

    input_type: CohereInputType | None = None
    embedding_types: list[CohereEmbeddingType] | None = None


def embedding_request(request: CohereEmbedRequest) -> EmbeddingRequest:
    """The embed task's request for Cohere's fields."""
    if request.max_tokens is not None:
        raise bad_request("max_tokens is not supported; truncate cuts each input to the model's limit", "max_tokens")
    if (request.texts is None) == (request.images is None):
        raise bad_request("give either texts or images", "texts")
    if request.images is not None:  # counted against the image limits by the embed task
        items: list = [{"image": uri} for uri in request.images]
    else:
        items = list(request.texts or [])
    if not items:
        raise bad_request("texts cannot be an empty list", "texts")
    query = request.input_type == "search_query"
    fields = {"model": request.model, "input": items, "dimensions": request.output_dimension}
    try:
        return EmbeddingRequest.model_validate(
            {**fields, "input_type": "query" if query else None, "truncate": request.truncate or "END"}
        )
    except ValidationError as exc:  # an item the embed task refuses, named as Cohere's field
        raise invalid_fields(list(exc.errors())) from exc


async def cohere_embed(embed: EmbedTask, request: CohereEmbedRequest, timings: Timings) -> dict:
    """v2's answer, or v1's: `embeddings_by_type` where `embedding_types` was given (always in v2),
    v1's `embeddings_floats` where it was not."""
    types = request.embedding_types or ["float"]
    kinds = tuple(dict.fromkeys("float" if k == "base64" else k for k in types))
    model, vectors, tokens = await embed.vectors(embedding_request(request), timings, kinds, "embedding_types")
    embeddings: dict[str, list] = {}
    for kind in dict.fromkeys(types):
        if kind == "base64":
            embeddings[kind] = [base64.b64encode(row.astype("<f4").tobytes()).decode("ascii") for row in vectors]
        else:
            embeddings[kind] = encode_rows(compress(vectors, kind, model), "float")
    billed = {"input_tokens": tokens, **({"images": len(request.images)} if request.images is not None else {})}
    v1 = isinstance(request, CohereEmbedRequestV1)
    by_type = request.embedding_types is not None
    return {
        "id": str(uuid.uuid4()),
        "embeddings": embeddings if by_type else embeddings["float"],
        "texts": list(request.texts or []),
        "meta": {"api_version": {"version": "1" if v1 else "2"}, "billed_units": billed},
        "response_type": "embeddings_by_type" if by_type else "embeddings_floats",
    }

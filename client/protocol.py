"""The request and response bodies several task modules share: the base model every request extends
(unknown fields logged, items counted by the body parser), OpenAI embeddings, the rerank shapes (Cohere,
Jina, TEI, NIM), /tokenize and the model cards. A task's own bodies live in its module
(client/token_outputs.py, client/cohere_embed.py, client/score.py)."""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from contract import InputType, Task, Truncate

TOKEN_ID_LIMIT = 2**63  # ids travel as int64; the model's vocabulary bound is checked once the model is known
log = logging.getLogger("client.protocol")


def _is_number(x: Any) -> bool:
    """A JSON number: integers beyond 64 bits arrive as floats (orjson), and must still read as token ids."""
    return isinstance(x, int | float) and not isinstance(x, bool)


def one_id_list(value: Any) -> bool:
    """An `input` that is one token-id list (one item), not a list of items: the one place that rule
    lives. Before validation it reads only the first element (a mixed list is refused by validation)."""
    return isinstance(value, list) and bool(value) and _is_number(value[0])


def field_names(extra: dict, shown: int = 8, width: int = 40) -> str:
    """Client-chosen field names for the log: escaped, each cut to `width`, at most `shown` of them."""
    names = [ascii(name[:width]) for name in list(extra)[:shown]]
    more = len(extra) - len(names)
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")


class Request(BaseModel):
    """Every request body: unknown fields are accepted (OpenAI's and the peers' clients send their own),
    logged once, and ignored. `items` names the list counted before validation, `max_items` the setting
    that bounds it (both read by the route's body parser, the one place items are counted). `priority`
    (vLLM's, and Cohere's on /v2/embed) is every request's."""

    model_config = ConfigDict(extra="allow")
    items: ClassVar[str] = "input"
    max_items: ClassVar[str] = "max_items_per_request"

    priority: int = Field(
        0, ge=-(2**31), lt=2**31, description="vLLM's: lower first; below 0 is served first, above 0 last"
    )

    @model_validator(mode="after")
    def _log_unknown(self) -> Request:
        if self.model_extra:
            log.info("ignoring unknown request fields: %s", field_names(self.model_extra))
        return self


def _check_token_ids(ids: list[int | float], where: str) -> None:
    """Every id an integer, non-negative and within int64, named by its position (`input[2][5]`)."""
    for j, x in enumerate(ids):
        if isinstance(x, float) and not x.is_integer():
            raise ValueError(f"{where}[{j}] must be an integer token id, got {x}")
        if not 0 <= x < TOKEN_ID_LIMIT:
            raise ValueError(f"{where}[{j}] is token id {int(x)}, outside the vocabulary")


class MultimodalItem(BaseModel):
    """SGLang's item form: one embedding per item; text and image fused where the model allows it."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = None
    image: str | None = Field(None, description="http(s) URL, data: URI or base64 of an encoded image")


class EmbeddingRequest(Request):
    """`POST /v1/embeddings`."""

    input: str | list[int] | list[list[int]] | list[str | MultimodalItem] = Field(
        description="a text, a list of texts and {text, image} items, token ids, or a list of token-id lists"
    )
    model: str | None = Field(None, description="served model id or alias; optional when one model is served")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, description="not supported by the served models unless they declare it")
    user: str | None = None
    truncate: Truncate | None = Field(
        None, description="over-long input: cut at the START or END, or NONE to reject it"
    )
    input_type: InputType | None = Field(
        None, description="query: wrap in the model's instruction template; document (default): raw text"
    )
    instruction: str | None = Field(None, description="task description replacing the model's default, for queries")
    embedding_type: Literal["float", "int8", "uint8", "binary", "ubinary"] = Field(
        "float",
        description="compressed embeddings (NIM's name): int8/uint8 calibrated, binary/ubinary 1 bit a dimension",
    )

    @field_validator("input", mode="before")
    @classmethod
    def _texts(cls, value: Any) -> Any:
        """Name the offending item instead of pydantic's union report."""
        if isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise ValueError(f"input must be a string or a list, got {type(value).__name__}")
        if one_id_list(value) and all(_is_number(x) for x in value):
            _check_token_ids(value, "input")
            return value
        if value and all(isinstance(x, list) for x in value):
            for i, ids in enumerate(value):
                if not ids or not all(_is_number(x) for x in ids):
                    raise ValueError(f"input[{i}] must be a non-empty list of integer token ids")
                _check_token_ids(ids, f"input[{i}]")
            return value
        for i, item in enumerate(value):
            if isinstance(item, dict):
                unknown = set(item) - {"text", "image"}
                if unknown:
                    raise ValueError(f"input[{i}] has unknown keys {sorted(unknown)}; items take text and image")
                if not any(isinstance(item.get(k), str) for k in ("text", "image")):
                    raise ValueError(f"input[{i}] needs a text or an image string")
                if any(item.get(k) is not None and not isinstance(item[k], str) for k in ("text", "image")):
                    raise ValueError(f"input[{i}].text and .image must be strings")
            elif not isinstance(item, str):
                raise ValueError(
                    f"input[{i}] must be a string or a {{text, image}} item, got {type(item).__name__} "
                    "(token ids go as a list of ints or a list of int lists, not mixed with text)"
                )
        return value


class TokenizeRequest(Request):
    """`POST /tokenize`: the token ids a text becomes after the model's template and special tokens."""

    input: str | list[str] = Field(description="one text or a list of texts")
    model: str | None = None
    input_type: InputType | None = None
    instruction: str | None = None
    truncate: Truncate | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _texts(cls, value: Any) -> Any:
        if isinstance(value, list) and not all(isinstance(x, str) for x in value):
            raise ValueError("input must be a string or a list of strings")
        return value


class RerankDocument(BaseModel):
    """A document as an object (Cohere v1, Jina): its `text` is what is scored."""

    model_config = ConfigDict(extra="allow")

    text: str


class RerankRequest(Request):
    """`POST /v1/rerank`, `/v2/rerank` (Cohere v1/v2 and Jina's shape)."""

    items: ClassVar[str] = "documents"
    max_items: ClassVar[str] = "max_documents_per_request"

    model: str | None = Field(None, description="served reranker id or alias; optional when one reranker is served")
    query: str
    documents: list[str | RerankDocument] = Field(description="texts, or objects with a `text`")
    top_n: int | None = Field(None, ge=1, description="return only the best N (default: all, best first)")
    return_documents: bool = Field(False, description="include each document's text in its result")
    max_tokens_per_doc: int | None = Field(
        None,
        ge=1,
        description="cut each document to this many tokens first (Cohere v2); the pair is then cut "
        "to the model's limit as its recipe does",
    )
    raw_scores: bool = Field(False, description="the model's raw logits instead of probabilities")
    truncate: Truncate | None = Field(None, description="over-long pairs: END (default) or START cut, NONE refuses")
    instruction: str | None = Field(None, description="the task, for rerankers that take one")

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class NimText(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


class NimRankingRequest(Request):
    """`POST /v1/ranking` in NVIDIA NIM's reranking shape."""

    items: ClassVar[str] = "passages"
    max_items: ClassVar[str] = "max_documents_per_request"

    model: str | None = None
    query: NimText
    passages: list[NimText]
    truncate: Literal["NONE", "END"] | None = Field(None, description="END cuts an over-long pair; NONE refuses it")


class VllmTruncation(Request):
    """vLLM's `truncate_prompt_tokens`, as its pooling and score routes take it: here only -1 or unset (each
    input is cut to the model's limit)."""

    truncate_prompt_tokens: int | None = Field(None, description="-1 or unset: cut to the model's limit")

    @field_validator("truncate_prompt_tokens")
    @classmethod
    def _whole_limit(cls, value: int | None) -> int | None:
        if value not in (None, -1):
            raise ValueError("truncate_prompt_tokens takes -1 (the model's limit) or nothing")
        return value


class TeiTruncation(Request):
    """text-embeddings-inference's truncation fields, as every TEI-shaped route takes them."""

    truncate: bool | None = Field(None, description="false refuses over-long inputs; unset: the server's default")
    truncation_direction: Literal["right", "left", "Right", "Left"] = "right"

    def truncate_mode(self) -> str | None:
        """The TRUNCATE control: NONE for false, START or END by the direction when true or left, else unset."""
        left = self.truncation_direction.lower() == "left"
        if self.truncate is False:
            return "NONE"
        if self.truncate is True or left:
            return "START" if left else "END"
        return None


class TeiRerankRequest(TeiTruncation):
    """`POST /rerank` in text-embeddings-inference's shape (LlamaIndex, Haystack, Milvus call it)."""

    items: ClassVar[str] = "texts"
    max_items: ClassVar[str] = "max_documents_per_request"

    model: str | None = None
    query: str
    texts: list[str]
    raw_scores: bool = False
    return_text: bool = False


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | list[int] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class EngineCandidate(BaseModel):
    engine: str
    texts_per_second: float
    min_cosine: float
    gate: Literal["pass", "fail"]


class ModelCard(BaseModel):
    """A served model: `id` is the name responses use; `hf_id` and `aliases` are accepted as well."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "triton"
    hf_id: str | None = None
    aliases: list[str]
    dimension: int
    matryoshka_dimensions: list[int] = Field(description="sizes `dimensions` may take besides the full one")
    matryoshka_min_dimension: int | None = Field(
        None, description="any `dimensions` from this up to the full size is valid (null: no such range)"
    )
    max_tokens: int
    modalities: list[str]
    query_template: bool | None = Field(
        None, description="whether input_type query / instruction change the embedding (null: not declared)"
    )
    task: Task = Field("embed", description="its own task: embed, rerank, sparse (/embed_sparse), multivector")
    tasks: list[str] = Field(
        default_factory=list, description="every task it serves: embed, rerank, sparse (/embed_sparse), multivector"
    )
    engine: str | None = Field(None, description="what runs the encoder: `<target> <dtype>` (null: not recorded)")
    engine_candidates: list[EngineCandidate] = Field(
        default_factory=list,
        description="what `--target auto` measured at export on its machine: each engine's speed and fidelity",
    )
    int8_ranges: list[list[float]] | None = Field(
        None, description="int8/uint8 calibration: [minimums, maximums] per dimension (null: none)"
    )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]

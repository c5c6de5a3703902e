"""The contract between the export and its readers: every `config.pbtxt` parameter, typed, in one place;
every tensor name that crosses a boundary; the task table; Triton's admin header.

A leaf package: the export writes these dataclasses with `to_parameters()`; the Triton Python models
(`runtime/`, which carry a copy of this package beside each `model.py`), the adapter (`client/`) and the
launcher read them back with `from_parameters()`. It imports none of them, and only the standard
library, so the adapter's image carries it without torch, transformers or numpy.

A key is a field name; a value is its text: numbers as written, booleans `true`/`false`, tuples
comma-separated. A missing field takes its default only where
the field has one (older exports); a required field that is missing is an error at load, never a guess.

The tensor names below are the wire between the three, and each ensemble's card says which optional
inputs it accepts. Per-request controls (TRUNCATE, INPUT_TYPE, INSTRUCTION) travel as batched inputs
like every ensemble input, but they are one value per request: the preprocessors read the first row,
and the adapter sends the other rows empty.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

T = TypeVar("T", bound="Parameters")

# Triton's admin protocols, restricted to callers that send the admin key: the repository API (loading a
# model with a `file:` override runs new code in the server), shared memory, statistics, trace and
# logging. Health, metadata, model config and inference stay open to the adapter and the probes.
RESTRICTED = ("model-repository", "shared-memory", "statistics", "trace", "logging")
ADMIN_HEADER = "triton-admin-key"  # the header those protocols ask for; the supervisor and the adapter send it
GRPC_ADMIN_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"  # Triton prefixes the key on gRPC

# The tensor names that cross the adapter, the ensembles and the Python models.
TEXT, IMAGE, TOKEN_IDS = "TEXT", "IMAGE", "TOKEN_IDS"  # items: strings, image bytes, rows of little-endian int64
TRUNCATE, INPUT_TYPE, INSTRUCTION = "TRUNCATE", "INPUT_TYPE", "INSTRUCTION"  # per-request controls
EMBEDDING, TOKEN_COUNT = "EMBEDDING", "TOKEN_COUNT"  # what every embedding ensemble returns
IMAGE_EMBEDS = "IMAGE_EMBEDS"  # image features scattered into the text encoder (GME)
QUERY, SCORE = "QUERY", "SCORE"  # a reranker's: each row's query (beside its document, TEXT), and its raw score
# A sparse output as entries, row by row: weights and the vocabulary id of each (an id may repeat, and a
# weight of 0 is no entry); and a multi-vector head's vector of each token, at the row's padded width.
SPARSE_IDS, SPARSE_WEIGHTS, TOKEN_VECTORS = "SPARSE_IDS", "SPARSE_WEIGHTS", "TOKEN_VECTORS"
SPARSE_VECTOR = "SPARSE_VECTOR"  # a SPLADE engine's weight of every vocabulary id, compacted by its host
MAX_DOC_TOKENS = "MAX_DOC_TOKENS"  # a reranker's per-request control: each document cut to this many tokens first
# The optional inputs each kind of ensemble accepts besides its items.
TEXT_CONTROLS: tuple[str, ...] = (TRUNCATE, INPUT_TYPE, INSTRUCTION, TOKEN_IDS)  # TOKEN_IDS: instead of TEXT
FUSED_IMAGE_CONTROLS: tuple[str, ...] = (TEXT, INPUT_TYPE, INSTRUCTION)  # each image item's text, and the prompt's
RERANK_CONTROLS: tuple[str, ...] = (TRUNCATE, MAX_DOC_TOKENS)
# Row inputs whose value repeats down a call (a request's query beside each of its documents): a row
# equal to the one above it travels empty, so a query crosses gRPC once per call, not once per document.
REPEATED_ROWS: tuple[str, ...] = (QUERY,)


# Request priority: every batched model queues by Triton priority level (1 first, PRIORITY_LEVELS last), and
# a request that names none takes DEFAULT_PRIORITY_LEVEL. The adapter's `priority` is vLLM's: an integer,
# lower first, 0 by default; below 0 is the first level, above 0 the last.
PRIORITY_LEVELS, DEFAULT_PRIORITY_LEVEL = 3, 2


def triton_priority(priority: int) -> int:
    """The Triton level of a request's `priority` (0, Triton's "the model's default", for 0)."""
    return 0 if priority == 0 else min(max(DEFAULT_PRIORITY_LEVEL + priority, 1), PRIORITY_LEVELS)


def collapse_repeats(column: list) -> list:
    """`[q, q, q, r]` → `[q, "", "", r]`: each value equal to the row above it sent empty."""
    return [v if j == 0 or v != column[j - 1] else "" for j, v in enumerate(column)]


def expand_repeats(column: list[str], name: str) -> list[str]:
    """The inverse of `collapse_repeats`; the first row must carry a value (ValueError otherwise)."""
    if column and not column[0]:
        raise ValueError(f"the first row's {name} is empty (an empty row repeats the row above it)")
    out: list[str] = []
    for value in column:
        out.append(value or out[-1])
    return out


Task = Literal["embed", "rerank", "sparse", "multivector"]
TASKS: tuple[str, ...] = typing.get_args(Task)


@dataclass(frozen=True)
class TaskOutput:
    """One tensor a task's ensemble returns, per row: its name, numpy dtype and shape after the row
    axis (a name stands for a card field: `dimension`)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclass(frozen=True)
class TaskSpec:
    """What a task is at every boundary: the outputs its ensembles return (by name, the adapter reads
    them so), the per-request controls its ensembles may accept, and the adapter routes that serve it."""

    outputs: tuple[TaskOutput, ...]
    controls: tuple[str, ...]
    routes: tuple[str, ...]

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)


_TOKENS = TaskOutput(TOKEN_COUNT, "int32", (1,))  # every task counts each row's tokens, for usage
# The task table: a task is its outputs, controls and routes; a new task is an entry here, a head in
# the export and a task module in the adapter.
TASK_TABLE: dict[str, TaskSpec] = {
    "embed": TaskSpec(
        (TaskOutput(EMBEDDING, "float32", ("dimension",)), _TOKENS),
        TEXT_CONTROLS,
        ("/v1/embeddings", "/tokenize", "/v1/tokenize"),
    ),
    "rerank": TaskSpec(
        (TaskOutput(SCORE, "float32", (1,)), _TOKENS),
        RERANK_CONTROLS,
        ("/v1/rerank", "/v2/rerank", "/rerank"),
    ),
    "sparse": TaskSpec(
        (TaskOutput(SPARSE_IDS, "int64", ("entries",)), TaskOutput(SPARSE_WEIGHTS, "float32", ("entries",)), _TOKENS),
        TEXT_CONTROLS,
        ("/embed_sparse",),
    ),
    "multivector": TaskSpec(
        (TaskOutput(TOKEN_VECTORS, "float32", ("tokens", "dimension")), _TOKENS),
        TEXT_CONTROLS,
        ("/pooling",),
    ),
}

Truncate = Literal["NONE", "START", "END"]
TRUNCATE_MODES: tuple[str, ...] = typing.get_args(Truncate)
InputType = Literal["query", "document"]
INPUT_TYPES: tuple[str, ...] = typing.get_args(InputType)
Batching = Literal["length_packed", "vision_packed", "concatenate"]
BATCHINGS: tuple[str, ...] = typing.get_args(Batching)


class ContractError(ValueError):
    """A config.pbtxt whose parameters do not satisfy the contract."""


def _encode(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(_encode(v) for v in value)
    return str(value)


def _decode(text: str, kind: Any, key: str) -> object:
    origin = typing.get_origin(kind)
    if origin is tuple:
        item = typing.get_args(kind)[0]
        return tuple(_decode(part.strip(), item, key) for part in text.split(",") if part.strip())
    if origin is Literal:
        if text not in typing.get_args(kind):
            raise ContractError(f"parameter {key!r} must be one of {', '.join(typing.get_args(kind))}, got {text!r}")
        return text
    if kind is bool:
        if text not in ("true", "false"):
            raise ContractError(f"parameter {key!r} must be true or false, got {text!r}")
        return text == "true"
    try:
        return kind(text)
    except ValueError as exc:
        raise ContractError(f"parameter {key!r} must be {kind.__name__}, got {text!r}") from exc


@dataclass(frozen=True)
class Parameters:
    """A typed block of `config.pbtxt` parameters (subclasses declare the fields)."""

    def to_parameters(self) -> dict[str, str]:
        return {f.name: _encode(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_parameters(cls: type[T], params: dict[str, str]) -> T:
        hints = typing.get_type_hints(cls, globalns={**globals(), **vars(typing)})
        values = {}
        for f in dataclasses.fields(cls):
            if f.name in params:
                values[f.name] = _decode(params[f.name], hints[f.name], f.name)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ContractError(f"config.pbtxt lacks the parameter {f.name!r}")
        return cls(**values)


@dataclass(frozen=True)
class EnsembleCard(Parameters):
    """What the adapter learns about a text ensemble: the model's identity, limits and abilities."""

    MARK: ClassVar[str] = "embedding_model"  # set to "true" on every ensemble the adapter may serve

    dimension: int
    max_tokens: int
    hf_id: str = ""
    aliases: tuple[str, ...] = ()
    modalities: tuple[str, ...] = ("text",)
    image_ensemble: str = ""  # the ensemble embedding image items, for models with an image tower
    fuses_modalities: bool = False  # one item may hold text and an image, embedded together
    image_batch: int = 0  # image items per call into the image ensemble (0: the ensemble's max batch)
    vocab_size: int = 0  # the tokenizer's, added tokens included: the bound of token-id input (0: unknown)
    query_template: bool = False  # queries get an instruction template (input_type, instruction matter)
    matryoshka_dimensions: tuple[int, ...] = ()  # sizes `dimensions` may take besides the full one
    matryoshka_min_dimension: int = 0  # any size from this up to the full one (0: none)
    controls: tuple[str, ...] = TEXT_CONTROLS  # the text ensemble's optional inputs
    image_controls: tuple[str, ...] = ()  # the image ensemble's optional inputs
    task: Task = "embed"  # rerank: rows are (QUERY, TEXT) pairs, the output a SCORE (`dimension` 1)
    engine: str = ""  # what runs the text encoder: "<target> <dtype>" ("local float32", "torch bfloat16")
    # What `--target auto` measured on the export's machine, each "target dtype:texts/s:min cosine:pass|fail"
    engine_candidates: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()  # the tasks its ensemble serves besides `task` (each its outputs, by name)
    # int8 / uint8 embeddings: each dimension's minimum then maximum over the export's calibration texts, at
    # the full dimension (sentence-transformers' `quantize_embeddings` ranges); empty: not calibrated
    int8_ranges: tuple[float, ...] = ()

    def serves(self, task: str) -> bool:
        """Its own tasks; and a multi-vector model reranks too (MaxSim of the query's and each document's
        vectors, computed by the adapter from the multivector task's outputs)."""
        return task == self.task or task in self.tasks or (task == "rerank" and "multivector" in self.tasks)

    def to_parameters(self) -> dict[str, str]:
        return {self.MARK: "true", **super().to_parameters()}


@dataclass(frozen=True)
class TextParams(Parameters):
    """How a preprocessor tokenises: the tokenizer file, the sequence frame, the prompt templates."""

    tokenizer: str
    prefix_ids: tuple[int, ...]
    suffix_ids: tuple[int, ...]
    max_length: int
    pad_id: int
    buckets: tuple[int, ...]
    default_truncate: Truncate
    query_template: str = ""  # "{instruction}" and "{text}"; empty: queries are embedded raw
    default_instruction: str = ""
    document_template: str = ""  # empty: documents are embedded raw


@dataclass(frozen=True)
class PairParams(Parameters):
    """How a reranker's preprocessor frames a (query, document) pair, as the model's tokenizer does:
    `prefix query middle document suffix`, the document part (and the suffix) of token type
    `second_type`, each part cut longest-first to fit `max_length`."""

    tokenizer: str
    prefix_ids: tuple[int, ...]
    middle_ids: tuple[int, ...]
    suffix_ids: tuple[int, ...]
    second_type: int  # token type of the document and suffix (BERT: 1; XLM-R takes no types: 0)
    max_length: int
    pad_id: int
    buckets: tuple[int, ...]
    default_truncate: Truncate


@dataclass(frozen=True)
class PromptPairParams(Parameters):
    """How an LLM reranker's preprocessor words a pair (Qwen3-Reranker): `template` with `{instruction}`,
    `{query}` and `{document}` is tokenised as one text, cut to the room the prompt's `prefix` and
    `suffix` ids leave, and framed by them."""

    tokenizer: str
    template: str
    default_instruction: str
    prefix_ids: tuple[int, ...]
    suffix_ids: tuple[int, ...]
    max_length: int
    pad_id: int
    buckets: tuple[int, ...]
    default_truncate: Truncate


@dataclass(frozen=True)
class EncoderHostParams(Parameters):
    """An engine hosted by the Python backend: the ONNX graph in-process (ONNX Runtime or OpenVINO), or a
    native engine model via BLS."""

    batching: Batching
    onnx_file: str = ""  # "": the engine is `engine_model`
    intra_op_threads: int = 0
    engine_model: str = ""
    engine_inputs: tuple[str, ...] = ()  # "name:numpy dtype" of each engine input (fp16 plans take fp16)
    max_rows: int = 32  # length_packed: rows of one engine call
    max_tokens: int = 16384  # length_packed: rows × padded width of one call
    max_padding: float = 0.25  # length_packed: padded tokens allowed per real token of one call
    max_patches: int = 0  # vision_packed: image patches of one call (a larger image runs alone)
    # An engine output `[rows, vocabulary]` (SPLADE's) the host sends as SPARSE_IDS and SPARSE_WEIGHTS: each
    # row's non-zero entries, padded to the request's largest count, so the wire carries no vocabulary.
    sparse_source: str = ""
    onnx_runtime: str = "onnxruntime"  # what runs `onnx_file`: "onnxruntime" or "openvino"
    onnx_dtype: str = "float32"  # openvino: its inference precision, "float32" or "bfloat16" (over fp32 weights)

    def engine_dtypes(self) -> dict[str, str]:
        return dict(pair.split(":", 1) for pair in self.engine_inputs)

    def to_parameters(self) -> dict[str, str]:
        """Only the fields that apply: the engine's source, and the packing limits of its batching."""
        packing = {"length_packed": ("max_rows", "max_tokens", "max_padding"), "vision_packed": ("max_patches",)}
        unused = {k for b, keys in packing.items() if b != self.batching for k in keys}
        if self.onnx_runtime == "onnxruntime":  # the default engine of an ONNX graph: no fields to say so
            unused |= {"onnx_runtime", "onnx_dtype"}
        return {k: v for k, v in super().to_parameters().items() if k not in unused and v != ""}


@dataclass(frozen=True)
class TorchGraphParams(Parameters):
    """The `torch` target: the host builds its tower's graph from the weights beside it, with the same
    builder the ONNX export traces (the `graphs` package, copied beside the host), and runs it in PyTorch."""

    graph: str  # the builder's import path in the graphs package ("graphs.dense:pooled")
    auto_class: str  # the transformers class that loads the weights
    tower: str  # "text" or "image"
    dtype: str  # the weights' dtype where the graph runs on a GPU; fp32 on the CPU
    attention: str  # a decoder's attention mode ("causal" or "bidirectional")
    pooling: str
    normalize: bool
    inputs: tuple[str, ...]  # the graph's inputs, in the order it takes them
    outputs: tuple[str, ...]  # the graph's outputs, in the order it returns them
    decoder: bool = False  # a causal LM backbone whose attention mode is set (config.is_causal)
    checkpoint: str = "checkpoint"  # the weights' folder, beside model.py
    image_token_id: int = -1  # -1: none
    score_tokens: tuple[int, ...] = ()  # an LLM reranker's (yes, no) token ids
    dropped_ids: tuple[int, ...] = ()  # token ids a sparse head gives no weight


@dataclass(frozen=True)
class FixedImageParams(Parameters):
    """CLIP-style image preprocessing: shortest edge, centre crop, normalise; and the decoding cap."""

    shortest_edge: int
    crop_height: int
    crop_width: int
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    resample: int
    max_decoded_pixels: int


@dataclass(frozen=True)
class PatchImageParams(Parameters):
    """Qwen2-VL-style image items: resize bounds, patching, the image token; and the decoding cap."""

    min_pixels: int  # the resize bounds of the processor (not a decoding cap)
    max_pixels: int
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    patch_size: int
    merge_size: int
    temporal_patch_size: int
    max_decoded_pixels: int


def input_type_of(input_type: str | None, instruction: str | None) -> str:
    """The rule both the adapter and the preprocessors apply: an instruction implies a query, and a
    document takes none. Raises ValueError (each side words it as its own error)."""
    resolved = (input_type or ("query" if instruction is not None else "document")).lower()
    if resolved not in INPUT_TYPES:
        raise ValueError(f"input_type must be one of {', '.join(INPUT_TYPES)}, got {input_type!r}")
    if instruction is not None and resolved != "query":
        raise ValueError("instruction applies to queries only; drop it or set input_type to query")
    return resolved


def parameters(model_config: dict[str, Any]) -> dict[str, str]:
    """`{key: string_value}` of a model config as Triton returns it (as JSON)."""
    return {k: v.get("string_value", "") for k, v in model_config.get("parameters", {}).items()}


def model_config(args: dict[str, str]) -> dict[str, Any]:
    """The model config Triton passes to a Python model's `initialize`."""
    return json.loads(args["model_config"])


def version_dir(args: dict[str, str]) -> Path:
    """The `<repo>/<model>/<version>` folder of the instance being initialised."""
    return Path(args["model_repository"]) / args["model_version"]

"""One declarative spec per model family, selected by `config.model_type`.

Adding a family means adding a spec here (and, where its graph differs, a graph
builder in `export/graph.py`), never copying a module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from export.errors import ExportError
from export.pooling import PoolingMode
from runtime.qwen2vl import GME_TEMPLATE

Attention = Literal["causal", "bidirectional"]
Dtype = Literal["float32", "float16", "bfloat16"]

# The instruction template of e5-mistral-7b-instruct and gte-Qwen2-7B-instruct (their model cards).
INSTRUCT_QUERY = "Instruct: {instruction}\nQuery: {text}"
WEB_SEARCH_TASK = "Given a web search query, retrieve relevant passages that answer the query"


@dataclass(frozen=True)
class FamilySpec:
    """What differs between model families; the export mechanism is shared."""

    family: str
    model_types: tuple[str, ...]
    default_pooling: PoolingMode  # when the checkpoint carries no sentence-transformers modules
    default_normalize: bool
    default_max_length: int | None = None  # None: the checkpoint's own limit
    append_eos: bool = False  # end every sequence with the tokenizer's EOS token (last-token pooling reads it)
    decoder: bool = False  # a causal LM backbone whose attention mode export sets (config.is_causal)
    attention: Attention = "bidirectional"  # encoders attend both ways; decoders default to causal
    query_template: str = ""  # "{instruction}" and "{text}"; empty: queries are embedded raw
    default_instruction: str = ""
    document_template: str = ""  # empty: documents are embedded raw
    towers: tuple[str, ...] = ("text",)  # "image": a vision tower served by its own ensemble
    fuses_modalities: bool = False  # one item may hold text and an image together
    gpu_dtype: Dtype = "float16"  # precision of the GPU targets
    atol: float = 1e-4  # max |onnx - torch| per embedding component (fp32)
    min_cosine: float = 0.99999


ENCODER = FamilySpec(
    family="encoder",
    model_types=("bert", "roberta", "xlm-roberta", "mpnet", "distilbert", "electra"),
    default_pooling="mean",
    default_normalize=True,
)

# e5-mistral-7b-instruct: <s> … </s>, causal, last token, 4096 tokens, fp16 on GPU.
MISTRAL_EMBEDDER = FamilySpec(
    family="mistral-embedder",
    model_types=("mistral", "llama"),
    default_pooling="lasttoken",
    default_normalize=True,
    default_max_length=4096,
    append_eos=True,
    decoder=True,
    attention="causal",
    query_template=INSTRUCT_QUERY,
    default_instruction=WEB_SEARCH_TASK,
    gpu_dtype="float16",
)

# gte-Qwen2-7B-instruct: … <|endoftext|>, last token, 8192 tokens, bf16 on GPU (fp16 overflows).
# Causal unless the checkpoint carries the gte recipe (see export/checkpoint.py: attention_of).
QWEN2_EMBEDDER = FamilySpec(
    family="qwen2-embedder",
    model_types=("qwen2",),
    default_pooling="lasttoken",
    default_normalize=True,
    default_max_length=8192,
    append_eos=True,
    decoder=True,
    attention="causal",
    query_template=INSTRUCT_QUERY,
    default_instruction=WEB_SEARCH_TASK,
    gpu_dtype="bfloat16",
)

# CLIP (openai/clip-vit-large-patch14-336): two towers in one space, projection and L2 fused, 77 tokens.
CLIP = FamilySpec(
    family="clip",
    model_types=("clip",),
    default_pooling="cls",  # unused: CLIPModel pools itself (EOS position for text, CLS for images)
    default_normalize=True,
    default_max_length=77,
    towers=("text", "image"),
)

# gme-Qwen2-VL-2B-Instruct (gme_inference.py): every item in the chat template ending in <|endoftext|>,
# image marker then text in one user turn, causal Qwen2 LM with 1-D positions, last token, L2.
GME_PROMPT = GME_TEMPLATE.replace("{input}", "{text}")
GME = FamilySpec(
    family="gme",
    model_types=("qwen2_vl",),
    default_pooling="lasttoken",
    default_normalize=True,
    default_max_length=1800,
    attention="causal",
    query_template=GME_PROMPT,
    document_template=GME_PROMPT,
    default_instruction="You are a helpful assistant.",
    towers=("text", "image"),
    fuses_modalities=True,
    gpu_dtype="float16",  # the authors' dtype; Qwen2's fp16 overflow risk applies (README)
)
GME_MIN_PIXELS, GME_MAX_PIXELS = 256 * 28 * 28, 1280 * 28 * 28  # the authors' bounds, not preprocessor_config.json's

FAMILIES: tuple[FamilySpec, ...] = (ENCODER, MISTRAL_EMBEDDER, QWEN2_EMBEDDER, CLIP, GME)


def spec_for(model_type: str) -> FamilySpec:
    """The family spec serving `model_type`, or an error listing what is supported."""
    for spec in FAMILIES:
        if model_type in spec.model_types:
            return spec
    supported = ", ".join(t for s in FAMILIES for t in s.model_types)
    raise ExportError(f"model_type {model_type!r} is not supported; supported: {supported}")

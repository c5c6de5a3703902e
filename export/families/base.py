"""What a model family declares. The export, the generated configs, the TensorRT shapes and the GPU
benchmark are generic over these declarations; a difference between families is a field here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from contract import Task
from export.request import Attention, Dtype, PoolingMode, Tolerance

if TYPE_CHECKING:
    from export.towers import Tower

EOS_TOKEN = "eos_token"  # `final_token`: whatever the tokenizer names as its EOS

# The instruction template of e5-mistral-7b-instruct and gte-Qwen2-7B-instruct (their model cards).
INSTRUCT_QUERY = "Instruct: {instruction}\nQuery: {text}"
WEB_SEARCH_TASK = "Given a web search query, retrieve relevant passages that answer the query"

# Decides the attention mode from a checkpoint's files, with the signal that decided it; None: no opinion.
AttentionSignal = Callable[[Path, dict], "tuple[Attention, str] | None"]


@dataclass(frozen=True)
class Prompts:
    """How items are worded before tokenisation: `{instruction}` and `{text}` in each template."""

    query_template: str = ""  # empty: queries are embedded raw
    default_instruction: str = ""
    document_template: str = ""  # empty: documents are embedded raw (GME wraps them too)


@dataclass(frozen=True)
class Matryoshka:
    """The `dimensions` a model was trained to be cut to (cut, then re-normalised)."""

    dimensions: tuple[int, ...] = ()  # listed sizes besides the full one
    min_dimension: int = 0  # any size from this up to the full one (0: none)


@dataclass(frozen=True)
class Architecture:
    """A real checkpoint's shapes, for benchmarks that build the graphs with random weights."""

    name: str
    model_class: str  # the transformers class the export loads (AutoModel resolves to it)
    config: dict
    attention: Attention | None = None  # None: the family's default


@dataclass(frozen=True)
class Family:
    """One model family: how its checkpoints are tokenised, prompted, pooled, exported and served."""

    name: str
    model_types: tuple[str, ...]  # config.json `model_type` values it serves
    towers: tuple[Tower, ...]  # the text tower first; an image tower adds an image ensemble
    pooling: PoolingMode  # when the checkpoint carries no sentence-transformers modules
    normalize: bool = True
    attention: Attention = "bidirectional"
    decoder: bool = False  # a causal LM backbone whose attention mode the export sets (config.is_causal)
    attention_signal: AttentionSignal | None = None  # a recipe recognised from the checkpoint's files
    max_length: int | None = None  # None: the checkpoint's own limit
    final_token: str | None = None  # the token every sequence ends with (EOS_TOKEN: the tokenizer's EOS);
    # None: the tokenizer's post-processor frames the sequence
    prompts: Prompts = Prompts()
    text_config: str = ""  # key of the text model's config inside config.json ("": top level)
    dimension_key: str = "hidden_size"  # config.json path of the embedding size ("text_config.hidden_size")
    gpu_dtype: Dtype = "float16"  # precision of the GPU targets
    tolerance: Tolerance = Tolerance()
    matryoshka: Matryoshka = Matryoshka()
    architectures: tuple[Architecture, ...] = field(default=())  # real shapes, for bench.gpu_graphs
    task: Task = "embed"  # rerank: its text tower scores (query, document) pairs
    auto_class: str = "AutoModel"  # the transformers class the export loads the weights with
    score_tokens: tuple[str, str] = ()  # an LLM reranker's (yes, no) tokens, whose logits make its score
    output: str = ""  # what the export's summary says the graphs return ("": the pooling and normalisation)
    # Files beside config.json that its graphs read besides the safetensors (a head's own weights); a
    # checkpoint holding them all is this family's rather than a family of the same model_type without them.
    weight_files: tuple[str, ...] = ()
    markers: tuple[str, ...] = ()  # sentence-transformers module kinds that mark its checkpoints the same way

    @property
    def text_tower(self) -> Tower:
        return next(t for t in self.towers if t.name == "text")

    @property
    def image_tower(self) -> Tower | None:
        return next((t for t in self.towers if t.name == "image"), None)

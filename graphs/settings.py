"""What a tower's graph is built with besides the weights. Standard library only: the export's value types
and the contract's readers name these without importing torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Attention = Literal["causal", "bidirectional"]
Dtype = Literal["float32", "float16", "bfloat16"]
PoolingMode = Literal["mean", "cls", "max", "mean_sqrt_len", "lasttoken"]


@dataclass(frozen=True)
class GraphSettings:
    """What a tower's graph is built with besides the weights (from a plan, or a benchmark's defaults)."""

    pooling: PoolingMode
    normalize: bool
    image_token_id: int | None = None
    score_tokens: tuple[int, int] | None = None  # an LLM reranker's (yes, no) token ids
    dropped_ids: tuple[int, ...] = ()  # token ids a sparse head gives no weight (the tokenizer's specials)

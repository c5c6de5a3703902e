"""Qwen3-Embedding (Qwen/Qwen3-Embedding-0.6B, -4B, -8B; the model card and its sentence-transformers
files): every sequence ends with one `<|endoftext|>` (the tokenizer's post-processor; its eos_token is
`<|im_end|>`, which is not used), causal attention with Qwen3's per-head q/k RMSNorm, last-token pooling,
L2; queries `Instruct: {task}\\nQuery:{text}` (no space after `Query:`, the `query` prompt of
config_sentence_transformers.json), documents raw; 32k tokens; bf16 on the GPU. Matryoshka-trained:
any size from 32 up to the full one (1,024 / 2,560 / 4,096), cut then re-normalised."""

from __future__ import annotations

from export.families.base import WEB_SEARCH_TASK, Architecture, Family, Matryoshka, Prompts
from export.towers.text import TextTower
from graphs.dense import pooled


def _shape(hidden: int, intermediate: int, layers: int, heads: int) -> dict:
    return {
        "vocab_size": 151669,
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "max_position_embeddings": 32768,
        "rope_theta": 1_000_000.0,
        "rms_norm_eps": 1e-6,
        "bos_token_id": 151643,
        "eos_token_id": 151643,
    }


FAMILY = Family(
    name="qwen3-embedder",
    model_types=("qwen3",),
    towers=(TextTower(pooled),),
    pooling="lasttoken",
    attention="causal",
    decoder=True,
    max_length=32768,
    final_token="<|endoftext|>",
    prompts=Prompts("Instruct: {instruction}\nQuery:{text}", WEB_SEARCH_TASK),
    gpu_dtype="bfloat16",
    matryoshka=Matryoshka(min_dimension=32),
    architectures=(
        Architecture("Qwen3-Embedding-0.6B", "Qwen3Model", _shape(1024, 3072, 28, 16)),
        Architecture("Qwen3-Embedding-4B", "Qwen3Model", _shape(2560, 9728, 36, 32)),
        Architecture("Qwen3-Embedding-8B", "Qwen3Model", _shape(4096, 12288, 36, 32)),
    ),
)

"""e5-mistral-7b-instruct (intfloat's model card): `<s> … </s>` (the server appends the EOS), causal
attention, last-token pooling, L2; queries `Instruct: {task}\\nQuery: {text}`, documents raw; 4,096
tokens; fp16 on the GPU."""

from __future__ import annotations

from export.families.base import EOS_TOKEN, INSTRUCT_QUERY, WEB_SEARCH_TASK, Architecture, Family, Prompts
from export.towers.text import TextTower
from graphs.dense import pooled

FAMILY = Family(
    name="mistral-embedder",
    model_types=("mistral", "llama"),
    towers=(TextTower(pooled),),
    pooling="lasttoken",
    attention="causal",
    decoder=True,
    max_length=4096,
    final_token=EOS_TOKEN,
    prompts=Prompts(INSTRUCT_QUERY, WEB_SEARCH_TASK),
    gpu_dtype="float16",
    architectures=(
        Architecture(
            "e5-mistral-7b-instruct",
            "MistralModel",
            {
                "vocab_size": 32000,
                "hidden_size": 4096,
                "intermediate_size": 14336,
                "num_hidden_layers": 32,
                "num_attention_heads": 32,
                "num_key_value_heads": 8,
                "max_position_embeddings": 32768,
                "sliding_window": None,
                "bos_token_id": 1,
                "eos_token_id": 2,
                "pad_token_id": 2,
            },
        ),
    ),
)

"""gte-Qwen2-7B-instruct (Alibaba's model card and `modeling_qwen.py`): `… <|endoftext|>`, last-token
pooling, L2; queries `Instruct: {task}\\nQuery: {text}`, documents raw; 8,192 tokens; bf16 on the GPU
(fp16 overflows). Bidirectional when the checkpoint carries the authors' recipe (below), else causal."""

from __future__ import annotations

from pathlib import Path

from export.families.base import EOS_TOKEN, INSTRUCT_QUERY, WEB_SEARCH_TASK, Architecture, Family, Prompts
from export.request import Attention
from export.towers.text import TextTower
from graphs.dense import pooled


def gte_recipe(checkpoint: Path, config: dict) -> tuple[Attention, str] | None:
    """The gte-Qwen2 recipe, recognised by its `auto_map` pointing at the authors' `modeling_qwen` code
    (their bidirectional Qwen2Model), which is never executed: the export sets the attention itself."""
    auto_map = config.get("auto_map", {})
    if not any("modeling_qwen." in str(v) for v in auto_map.values()):
        return None
    source = "present" if (checkpoint / "modeling_qwen.py").exists() else "named in auto_map only"
    return "bidirectional", f"gte-Qwen2 recipe: auto_map → modeling_qwen ({source}; never executed)"


FAMILY = Family(
    name="qwen2-embedder",
    model_types=("qwen2",),
    towers=(TextTower(pooled),),
    pooling="lasttoken",
    attention="causal",
    decoder=True,
    attention_signal=gte_recipe,
    max_length=8192,
    final_token=EOS_TOKEN,
    prompts=Prompts(INSTRUCT_QUERY, WEB_SEARCH_TASK),
    gpu_dtype="bfloat16",
    architectures=(
        Architecture(
            "gte-Qwen2-7B-instruct",
            "Qwen2Model",
            {
                "vocab_size": 151646,
                "hidden_size": 3584,
                "intermediate_size": 18944,
                "num_hidden_layers": 28,
                "num_attention_heads": 28,
                "num_key_value_heads": 4,
                "max_position_embeddings": 131072,
                "rope_theta": 1_000_000.0,
                "eos_token_id": 151643,
                "pad_token_id": 151643,
            },
            attention="bidirectional",
        ),
    ),
)

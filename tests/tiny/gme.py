"""A tiny gme-Qwen2-VL-2B-Instruct."""

from __future__ import annotations

import json
from pathlib import Path

from tests.tiny.common import bpe, save_model, save_tokenizer

KEY, REAL = "gme", "gme-Qwen2-VL-2B-Instruct"  # `python -m tests.tiny gme` writes a tiny gme-Qwen2-VL-2B-Instruct


QWEN2_VL_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
]


def qwen2_vl(path: Path, min_pixels: int = 4 * 28 * 28, max_pixels: int = 16 * 28 * 28) -> Path:
    """A gme-Qwen2-VL-shaped checkpoint: tiny vision tower (patch 14, merge 2) and Qwen2 LM, Qwen2-VL special tokens."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    tok = bpe(QWEN2_VL_SPECIALS)
    ids = {s: tok.token_to_id(s) for s in QWEN2_VL_SPECIALS}
    eos = ids["<|endoftext|>"]
    vocab = save_tokenizer(tok, path, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": vocab,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
            "bos_token_id": eos,
            "eos_token_id": eos,
            "pad_token_id": eos,
        },
        vision_config={
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": 64,
            "num_heads": 4,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "in_channels": 3,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|image_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    save_model(Qwen2VLForConditionalGeneration(config), path)
    (path / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "Qwen2VLImageProcessor",
                "min_pixels": min_pixels,
                "max_pixels": max_pixels,
                "patch_size": 14,
                "temporal_patch_size": 2,
                "merge_size": 2,
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
            },
            indent=2,
        )
    )
    return path


build = qwen2_vl

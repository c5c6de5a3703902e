"""A tiny CLIP (clip-vit-large-patch14-336's files and tokens)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.tiny.common import bpe, save_model, save_tokenizer

KEY, REAL = "clip", "clip-vit-large-patch14-336"  # `python -m tests.tiny clip` writes a tiny clip-vit-large-patch14-336


def clip(path: Path, image_size: int = 56, patch: int = 14, hidden: int = 32, projection: int = 16) -> Path:
    """A CLIP checkpoint: `<|startoftext|> … <|endoftext|>`, 77 positions, small towers, CLIP image processing."""
    from tokenizers import processors
    from transformers import CLIPConfig, CLIPModel

    tok = bpe(["<|startoftext|>", "<|endoftext|>"])
    bos, eos = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|endoftext|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", bos), ("<|endoftext|>", eos)]
    )
    vocab = save_tokenizer(
        tok,
        path,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tower = {"hidden_size": hidden, "intermediate_size": hidden * 2, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = CLIPConfig(
        text_config={
            **tower,
            "vocab_size": vocab,
            "max_position_embeddings": 77,
            "bos_token_id": bos,
            "eos_token_id": eos,
            "pad_token_id": eos,
        },
        vision_config={**tower, "image_size": image_size, "patch_size": patch},
        projection_dim=projection,
    )
    save_model(CLIPModel(config), path)
    (path / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "CLIPImageProcessor",
                "do_resize": True,
                "size": {"shortest_edge": image_size},
                "resample": 3,
                "do_center_crop": True,
                "crop_size": {"height": image_size, "width": image_size},
                "do_rescale": True,
                "rescale_factor": 1 / 255,
                "do_normalize": True,
                "do_convert_rgb": True,
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
            },
            indent=2,
        )
    )
    return path


build = clip

"""CLIP (openai/clip-vit-large-patch14-336): two towers in one space. Text `<|startoftext|> …
<|endoftext|>` (77 tokens) pooled at the EOS position, images resized, centre-cropped and pooled at
CLS; each projected and L2-normalised, as `get_text_features` / `get_image_features` then `normalize`."""

from __future__ import annotations

from export.families.base import Architecture, Family
from export.towers.fixed_image import FixedImageTower
from export.towers.text import TextTower
from graphs.clip import ClipImageGraph, ClipTextGraph

FAMILY = Family(
    name="clip",
    model_types=("clip",),
    towers=(TextTower(ClipTextGraph), FixedImageTower(ClipImageGraph)),
    pooling="cls",  # unused: CLIPModel pools itself (EOS position for text, CLS for images)
    output="text pooled at the EOS position, image at CLS, each projected, L2",
    max_length=77,
    text_config="text_config",
    dimension_key="projection_dim",
    architectures=(
        Architecture(
            "clip-vit-large-patch14-336",
            "CLIPModel",
            {
                "text_config": {
                    "vocab_size": 49408,
                    "hidden_size": 768,
                    "intermediate_size": 3072,
                    "num_hidden_layers": 12,
                    "num_attention_heads": 12,
                    "max_position_embeddings": 77,
                    "bos_token_id": 49406,
                    "eos_token_id": 49407,
                    "pad_token_id": 1,
                },
                "vision_config": {
                    "hidden_size": 1024,
                    "intermediate_size": 4096,
                    "num_hidden_layers": 24,
                    "num_attention_heads": 16,
                    "image_size": 336,
                    "patch_size": 14,
                },
                "projection_dim": 768,
            },
        ),
    ),
)

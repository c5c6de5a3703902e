"""gme-Qwen2-VL-2B-Instruct (the authors' `gme_inference.py`): every item in the chat template ending
in `<|endoftext|>`, the image marker then the text in one user turn, documents and queries alike
(documents with the default instruction); the causal Qwen2 LM with 1-D positions, last token, L2.
Images are resized twice, as the authors do (runtime/qwen2vl.py), within 256·28² … 1280·28² pixels.
The graphs export with dynamic image sizes and batches (graphs/gme.py).
"""

from __future__ import annotations

from export.families.base import Architecture, Family, Prompts
from export.towers.patch_image import PatchImageTower
from export.towers.text import TextTower
from graphs.gme import LanguageGraph, VisionGraph

# The authors' chat template: system turn with the instruction, the item (image marker, then text) as
# the user turn, the assistant turn opened and closed by <|endoftext|> (the token pooling reads).
TEMPLATE = (
    "<|im_start|>system\n{instruction}<|im_end|>\n<|im_start|>user\n{text}<|im_end|>\n"
    "<|im_start|>assistant\n<|endoftext|>"
)
MIN_PIXELS, MAX_PIXELS = 256 * 28 * 28, 1280 * 28 * 28  # the authors' bounds, not preprocessor_config.json's

FAMILY = Family(
    name="gme",
    model_types=("qwen2_vl",),
    towers=(TextTower(LanguageGraph, image_features=True), PatchImageTower(VisionGraph, MIN_PIXELS, MAX_PIXELS)),
    pooling="lasttoken",
    attention="causal",
    max_length=1800,
    prompts=Prompts(TEMPLATE, "You are a helpful assistant.", TEMPLATE),
    text_config="text_config",
    dimension_key="text_config.hidden_size",
    gpu_dtype="float16",  # the authors' dtype; Qwen2's fp16 overflow risk applies (README)
    architectures=(
        Architecture(
            "gme-Qwen2-VL-2B-Instruct",
            "Qwen2VLModel",
            {
                "text_config": {
                    "vocab_size": 151936,
                    "hidden_size": 1536,
                    "intermediate_size": 8960,
                    "num_hidden_layers": 28,
                    "num_attention_heads": 12,
                    "num_key_value_heads": 2,
                    "max_position_embeddings": 32768,
                    "rope_theta": 1_000_000.0,
                    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
                    "eos_token_id": 151643,
                    "pad_token_id": 151643,
                },
                "vision_config": {
                    "depth": 32,
                    "embed_dim": 1280,
                    "hidden_size": 1536,
                    "num_heads": 16,
                    "mlp_ratio": 4,
                    "patch_size": 14,
                    "spatial_merge_size": 2,
                    "temporal_patch_size": 2,
                    "in_channels": 3,
                },
                "image_token_id": 151655,
                "video_token_id": 151656,
                "vision_start_token_id": 151652,
                "vision_end_token_id": 151653,
            },
        ),
    ),
)

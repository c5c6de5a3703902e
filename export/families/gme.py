"""gme-Qwen2-VL-2B-Instruct (the authors' `gme_inference.py`): every item in the chat template ending
in `<|endoftext|>`, the image marker then the text in one user turn, documents and queries alike
(documents with the default instruction); the causal Qwen2 LM with 1-D positions, last token, L2.
Images are resized twice, as the authors do (runtime/qwen2vl.py), within 256·28² … 1280·28² pixels.

The graphs export with dynamic image sizes and batches. The stock vision tower splits attention
by `cu_seqlens.tolist()`, which no exporter can trace for dynamic sizes. `VisionGraph` takes each
patch's (row, column) and the index of the image it belongs to, and builds the rotary tables and the
block-diagonal attention mask inside the graph from elementwise ops only; the weights and the
arithmetic are the stock ones. `LanguageGraph` is the authors' forward: token embeddings, image
features scattered over the `<|image_pad|>` positions, the Qwen2 decoder with its default 1-D
positions (the authors pass no position ids), last-token pooling, L2.
"""

from __future__ import annotations

import torch

from export.families.base import Architecture, Family, Prompts
from export.pooling import pool
from export.request import GraphSettings
from export.towers.patch_image import PatchImageTower
from export.towers.text import TextTower


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class VisionGraph(torch.nn.Module):
    """`(pixel_values [N,1176], position_ids [N,2], segment_ids [N]) → image features [N/4, hidden]`."""

    def __init__(self, model: torch.nn.Module, _: GraphSettings | None = None) -> None:
        super().__init__()
        self.visual = model.visual

    def forward(
        self, pixel_values: torch.Tensor, position_ids: torch.Tensor, segment_ids: torch.Tensor
    ) -> torch.Tensor:
        v = self.visual
        hidden = v.patch_embed(pixel_values)
        inv_freq = v.rotary_pos_emb.inv_freq
        freqs = position_ids[..., None].float() * inv_freq  # [N, 2, dim/4]
        angles = torch.cat([freqs[:, 0], freqs[:, 1]], dim=-1)
        angles = torch.cat([angles, angles], dim=-1)[:, None, :]  # [N, 1, head_dim]
        cos, sin = angles.cos(), angles.sin()
        same = segment_ids[:, None] == segment_ids[None, :]
        bias = torch.where(same, 0.0, torch.finfo(torch.float32).min)[None, None].to(hidden.dtype)
        n = hidden.shape[0]
        for block in v.blocks:
            attn = block.attn
            x = block.norm1(hidden)
            q, k, val = attn.qkv(x).reshape(n, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
            qf, kf = q.float(), k.float()
            q = (qf * cos + _rotate_half(qf) * sin).to(q.dtype)
            k = (kf * cos + _rotate_half(kf) * sin).to(k.dtype)
            q, k, val = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, val))
            out = torch.nn.functional.scaled_dot_product_attention(q, k, val, attn_mask=bias, scale=attn.scaling)
            hidden = hidden + attn.proj(out.transpose(1, 2).reshape(n, -1))
            hidden = hidden + block.mlp(block.norm2(hidden))
        return v.merger(hidden).float()  # IMAGE_EMBEDS is FP32 whatever the weights


class LanguageGraph(torch.nn.Module):
    """`(input_ids, attention_mask, image_embeds [M, hidden]) → EMBEDDING`, M image-pad tokens in row-major order."""

    def __init__(self, model: torch.nn.Module, settings: GraphSettings) -> None:
        super().__init__()
        if settings.image_token_id is None:
            raise ValueError("GME's language graph needs the image token id (config.json image_token_id)")
        self.embed = model.get_input_embeddings()
        self.language_model = model.language_model
        self.image_token_id = settings.image_token_id

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_embeds: torch.Tensor
    ) -> torch.Tensor:
        embeds = self.embed(input_ids)
        slots = (input_ids == self.image_token_id).unsqueeze(-1).expand_as(embeds)
        embeds = embeds.masked_scatter(slots, image_embeds.to(embeds.dtype))
        hidden = self.language_model(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state
        return torch.nn.functional.normalize(pool(hidden, attention_mask, "lasttoken").float(), dim=-1)


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

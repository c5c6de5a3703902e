"""GME's graphs (export/families/gme.py has the recipe). The stock vision tower splits attention by
`cu_seqlens.tolist()`, which no exporter can trace for dynamic sizes. `VisionGraph` takes each
patch's (row, column) and the index of the image it belongs to, and builds the rotary tables and the
block-diagonal attention mask inside the graph from elementwise ops only; the weights and the
arithmetic are the stock ones. `LanguageGraph` is the authors' forward: token embeddings, image
features scattered over the `<|image_pad|>` positions, the Qwen2 decoder with its default 1-D
positions (the authors pass no position ids), last-token pooling, L2.
"""

from __future__ import annotations

import torch

from graphs.pooling import pool
from graphs.settings import GraphSettings


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

"""CLIP's towers: text pooled at the EOS position, image at CLS, each projected and L2-normalised, as
`get_text_features` / `get_image_features` then `normalize` (export/families/clip.py)."""

from __future__ import annotations

import torch

from graphs.settings import GraphSettings


class ClipTextGraph(torch.nn.Module):
    """CLIPModel text tower: EOS-position pooling, `text_projection`, L2."""

    def __init__(self, clip: torch.nn.Module, _: GraphSettings | None = None) -> None:
        super().__init__()
        self.text_model, self.projection = clip.text_model, clip.text_projection

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = self.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return torch.nn.functional.normalize(self.projection(pooled).float(), dim=-1)


class ClipImageGraph(torch.nn.Module):
    """CLIPModel vision tower: CLS after `post_layernorm`, `visual_projection`, L2."""

    def __init__(self, clip: torch.nn.Module, _: GraphSettings | None = None) -> None:
        super().__init__()
        self.vision_model, self.projection = clip.vision_model, clip.visual_projection

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pooled = self.vision_model(pixel_values=pixel_values).pooler_output
        return torch.nn.functional.normalize(self.projection(pooled).float(), dim=-1)

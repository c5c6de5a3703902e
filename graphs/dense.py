"""The dense head: backbone + pooling + optional L2 normalisation → `EMBEDDING`."""

from __future__ import annotations

import inspect

import torch

from graphs.pooling import pool
from graphs.settings import GraphSettings, PoolingMode


class EmbeddingGraph(torch.nn.Module):
    """`(input_ids, attention_mask) → EMBEDDING [batch, dim]`: only pooled vectors leave."""

    def __init__(self, backbone: torch.nn.Module, pooling: PoolingMode, normalize: bool) -> None:
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.normalize = normalize
        self.zero_token_types = "token_type_ids" in inspect.signature(backbone.forward).parameters

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        extra = {"token_type_ids": torch.zeros_like(input_ids)} if self.zero_token_types else {}
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        pooled = pool(hidden.float(), attention_mask, self.pooling)  # pooled in fp32 whatever the weights
        return torch.nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled


def pooled(model: torch.nn.Module, settings: GraphSettings) -> EmbeddingGraph:
    """The text graph of every family that pools the backbone's hidden states itself."""
    return EmbeddingGraph(model, settings.pooling, settings.normalize)

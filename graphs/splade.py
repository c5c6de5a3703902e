"""SPLADE, as sentence-transformers' `SpladePooling` (max, relu) computes it over an MLM's logits: each
vocabulary id's largest `log(1 + relu(logit))` over the positions, padded positions masked first
(`sparse_encoder/modules/splade_pooling.py`; TEI's `--pooling splade` is the same formula; vLLM's
`SPLADESparsePooler` also drops CLS and SEP, which we do not)."""

from __future__ import annotations

import torch

from graphs.settings import GraphSettings


class SpladeGraph(torch.nn.Module):
    """`(input_ids, attention_mask) → SPARSE_VECTOR [b, vocabulary]`, fp32."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
        return torch.log1p(torch.relu(logits * attention_mask.unsqueeze(-1).float())).max(dim=1).values


def splade(model: torch.nn.Module, settings: GraphSettings) -> SpladeGraph:
    return SpladeGraph(model)

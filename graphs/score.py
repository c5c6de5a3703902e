"""The score heads of rerankers: a cross-encoder's classifier logit, and an LLM reranker's yes/no logit
difference (export/families/cross_encoder.py, qwen3_reranker.py say whose recipes they are)."""

from __future__ import annotations

import torch

from graphs.pooling import pool
from graphs.settings import GraphSettings

TYPES = "token_type_ids"


class ScoreGraph(torch.nn.Module):
    """`(input_ids, attention_mask[, token_type_ids]) → SCORE [batch, 1]`: the classifier's logit, FP32."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        extra = {TYPES: token_type_ids} if token_type_ids is not None else {}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits[:, :1].float()


def scored(model: torch.nn.Module, settings: GraphSettings) -> ScoreGraph:
    return ScoreGraph(model)


class YesNoScore(torch.nn.Module):
    """`(input_ids, attention_mask) → SCORE [batch, 1]`: `(W[yes] − W[no]) · h_last` in FP32."""

    def __init__(self, lm: torch.nn.Module, yes: int, no: int) -> None:
        super().__init__()
        self.backbone = lm.get_decoder()
        head = lm.get_output_embeddings().weight.detach()
        self.register_buffer("direction", (head[yes].float() - head[no].float()).clone())

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return (pool(hidden, attention_mask, "lasttoken") @ self.direction).unsqueeze(-1)


def yes_no_score(model: torch.nn.Module, settings: GraphSettings) -> YesNoScore:
    if settings.score_tokens is None:
        raise ValueError("Qwen3-Reranker's score needs the ids of its yes and no tokens")
    return YesNoScore(model, *settings.score_tokens)

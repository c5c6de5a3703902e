"""Cross-encoder rerankers (`*ForSequenceClassification` with one label: the ms-marco MiniLM
cross-encoders, BAAI/bge-reranker-v2-m3): the model card's recipe, `tokenizer(pairs, padding=True,
truncation=True, max_length=512)` then `model(**inputs).logits.view(-1)`. The pair is framed as the
tokenizer frames it (`[CLS] q [SEP] d [SEP]` with token types; `<s> q </s></s> d </s>` without),
cut longest-first; the served score is the logit, and the adapter's relevance score its sigmoid
(sentence-transformers' `CrossEncoder.predict` for one label). FlagEmbedding differs: it first cuts
the query to 3/4 of the length (docs/models.md)."""

from __future__ import annotations

import torch

from export.families.base import Family
from export.request import GraphSettings
from export.towers.pair import TYPES, PairTower


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


FAMILY = Family(
    name="cross-encoder",
    model_types=("bert", "roberta", "xlm-roberta", "electra"),
    towers=(PairTower(scored),),
    pooling="cls",  # the classification head pools; nothing else does
    normalize=False,
    output="the classifier's logit of each (query, document) pair",
    task="rerank",
    auto_class="AutoModelForSequenceClassification",
)

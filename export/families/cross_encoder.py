"""Cross-encoder rerankers (`*ForSequenceClassification` with one label: the ms-marco MiniLM
cross-encoders, BAAI/bge-reranker-v2-m3): the model card's recipe, `tokenizer(pairs, padding=True,
truncation=True, max_length=512)` then `model(**inputs).logits.view(-1)`. The pair is framed as the
tokenizer frames it (`[CLS] q [SEP] d [SEP]` with token types; `<s> q </s></s> d </s>` without),
cut longest-first; the served score is the logit, and the adapter's relevance score its sigmoid
(sentence-transformers' `CrossEncoder.predict` for one label). FlagEmbedding differs: it first cuts
the query to 3/4 of the length (docs/models.md)."""

from __future__ import annotations

from export.families.base import Family
from export.towers.pair import PairTower
from graphs.score import scored

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

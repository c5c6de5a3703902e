"""BERT-style encoders (sentence-transformers checkpoints: all-MiniLM-L6-v2, bge, e5 base…): the
tokenizer's own frame (`[CLS] … [SEP]`, `<s> … </s>`), bidirectional attention, and the pooling and
normalisation the checkpoint's sentence-transformers modules declare (mean and L2 without them)."""

from __future__ import annotations

from export.families.base import Architecture, Family
from export.towers.text import TextTower
from graphs.dense import pooled

FAMILY = Family(
    name="encoder",
    model_types=("bert", "roberta", "xlm-roberta", "mpnet", "distilbert", "electra"),
    towers=(TextTower(pooled),),
    pooling="mean",
    architectures=(
        Architecture(
            "all-MiniLM-L6-v2",
            "BertModel",
            {
                "vocab_size": 30522,
                "hidden_size": 384,
                "intermediate_size": 1536,
                "num_hidden_layers": 6,
                "num_attention_heads": 12,
                "max_position_embeddings": 512,
            },
        ),
    ),
)

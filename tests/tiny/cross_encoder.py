"""Tiny cross-encoders (`*ForSequenceClassification`, one label), as the rerankers of the model cards are:

- a BERT one with the real WordPiece tokenizer of the ms-marco MiniLM cross-encoders (the embedded
  all-MiniLM-L6-v2's: bert-base-uncased's vocabulary), pairs `[CLS] q [SEP] d [SEP]` with token types;
- an XLM-RoBERTa one (bge-reranker-v2-m3's architecture: `dense → tanh → out_proj` on `<s>`), pairs
  `<s> q </s></s> d </s>`, no token types (the XLM-R tokenizer does not return them).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.tiny.common import save_model, xlmr_tokenizer

KEY, REAL = "bert-reranker", "ms-marco-MiniLM-L6-v2"  # `python -m tests.tiny bert-reranker`

SIZES = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}


def bert_reranker(path: Path, sizes: dict[str, int] = SIZES) -> Path:
    from transformers import BertConfig, BertForSequenceClassification

    from launcher import default_model

    path.mkdir(parents=True, exist_ok=True)
    source = default_model.checkpoint()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(source / name, path / name)
    config = BertConfig(vocab_size=30522, max_position_embeddings=512, num_labels=1, **sizes)
    save_model(BertForSequenceClassification(config), path)
    return path


def xlmr_reranker(path: Path) -> Path:
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    vocab = xlmr_tokenizer(path)
    config = XLMRobertaConfig(
        vocab_size=vocab, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, num_labels=1, **SIZES
    )
    save_model(XLMRobertaForSequenceClassification(config), path)
    return path


build = bert_reranker

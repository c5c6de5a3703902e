"""A tiny BGE-M3 as BAAI/bge-m3 ships it: an `XLMRobertaModel` (`<s> … </s>`, pad id 1, 8,194 positions
in the real one) with `sparse_linear.pt` (`Linear(H, 1)`) and `colbert_linear.pt` (`Linear(H, H)`) beside
it, both float16 state dicts, and the sentence-transformers files the real folder carries (CLS pooling,
normalised)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.tiny.common import save_model, xlmr_tokenizer

KEY, REAL = "bge-m3", "bge-m3"  # `python -m tests.tiny bge-m3`

SIZES = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}


def bge_m3(path: Path, positions: int = 514, sizes: dict[str, int] = SIZES) -> Path:
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    path.mkdir(parents=True, exist_ok=True)
    vocab = xlmr_tokenizer(path)
    config = XLMRobertaConfig(
        vocab_size=vocab, max_position_embeddings=positions, type_vocab_size=1, pad_token_id=1, **sizes
    )
    torch.manual_seed(0)
    save_model(XLMRobertaModel(config, add_pooling_layer=False), path)
    hidden = sizes["hidden_size"]
    for name, out in (("sparse_linear.pt", 1), ("colbert_linear.pt", hidden)):
        layer = torch.nn.Linear(hidden, out)
        torch.save({k: v.half() for k, v in layer.state_dict().items()}, path / name)
    (path / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
            ]
        )
    )
    (path / "1_Pooling").mkdir(exist_ok=True)
    (path / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": hidden, "pooling_mode_cls_token": True})
    )
    (path / "2_Normalize").mkdir(exist_ok=True)
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": positions - 2}))
    return path


build = bge_m3

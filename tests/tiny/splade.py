"""A tiny SPLADE as sentence-transformers' `SparseEncoder` saves one (naver/splade-v3's layout): a
`BertForMaskedLM` with the real WordPiece vocabulary of bert-base-uncased (the embedded
all-MiniLM-L6-v2's, 30,522 ids: the output is vocabulary-wide), its modules `Transformer` (fill-mask)
and `SpladePooling` (max, relu) in modules.json. `legacy=True` rewrites modules.json as
sentence-transformers 5.0 wrote it (`sparse_encoder.models.MLMTransformer`, `…models.SpladePooling`)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from tests.tiny.common import save_model

KEY, REAL = "splade", "splade-v3"  # `python -m tests.tiny splade`

SIZES = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}


def splade(path: Path, legacy: bool = False) -> Path:
    import torch
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import SpladePooling, Transformer
    from transformers import BertConfig, BertForMaskedLM

    from launcher import default_model

    with tempfile.TemporaryDirectory() as folder:
        mlm = Path(folder)
        source = default_model.checkpoint()
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
            shutil.copy(source / name, mlm / name)
        torch.manual_seed(0)
        save_model(BertForMaskedLM(BertConfig(vocab_size=30522, max_position_embeddings=512, **SIZES)), mlm)
        encoder = SparseEncoder(modules=[Transformer(str(mlm), transformer_task="fill-mask"), SpladePooling("max")])
        encoder.save(str(path))
    if legacy:
        modules = json.loads((path / "modules.json").read_text())
        names = {"Transformer": "MLMTransformer", "SpladePooling": "SpladePooling"}
        for module in modules:
            kind = module["type"].rsplit(".", 1)[-1]
            module["type"] = f"sentence_transformers.sparse_encoder.models.{names[kind]}"
        (path / "modules.json").write_text(json.dumps(modules, indent=2))
    return path


build = splade

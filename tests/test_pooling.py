"""Our fused pooling equals sentence-transformers' Pooling module, mode by mode."""

from __future__ import annotations

import json

import pytest
import torch
from sentence_transformers.models import Pooling

from export.errors import ExportError
from export.pooling import _ST_KEYS, read_modules
from graphs.pooling import pool
from launcher import default_model


@pytest.mark.parametrize("mode", ["mean", "cls", "max", "mean_sqrt_len", "lasttoken"])
def test_pool_matches_sentence_transformers(mode: str) -> None:
    torch.manual_seed(0)
    hidden = torch.randn(3, 7, 16)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5])
    st_mode = {
        "mean": "mean",
        "cls": "cls",
        "max": "max",
        "mean_sqrt_len": "mean_sqrt_len_tokens",
        "lasttoken": "lasttoken",
    }[mode]
    reference = Pooling(16, pooling_mode=st_mode)({"token_embeddings": hidden, "attention_mask": mask})[
        "sentence_embedding"
    ]
    torch.testing.assert_close(pool(hidden, mask, mode), reference, rtol=0, atol=1e-6)


def test_lasttoken_handles_left_padding() -> None:
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert pool(hidden, left, "lasttoken").ravel().tolist() == [3.0, 7.0]


def test_reads_the_default_model_pipeline() -> None:
    modules = read_modules(default_model.checkpoint())
    assert (modules.pooling, modules.normalize, modules.max_seq_length) == ("mean", True, 256)


def test_unsupported_pooling_is_an_error(tmp_path) -> None:
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            ]
        )
    )
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_weightedmean_tokens": True}))
    with pytest.raises(ExportError, match="weighted-mean"):
        read_modules(tmp_path)
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({k: True for k in _ST_KEYS}))
    with pytest.raises(ExportError, match="exactly one pooling mode"):
        read_modules(tmp_path)

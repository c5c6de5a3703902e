"""Pooling exactly as sentence-transformers' `Pooling` module computes it.

The mode comes from the checkpoint (`modules.json` → `1_Pooling/config.json`);
an unsupported mode is an error at load time, never a silent fallback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from export.errors import ExportError
from export.request import PoolingMode

_ST_KEYS: dict[str, PoolingMode] = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_lasttoken": "lasttoken",
}


@dataclass(frozen=True)
class SentenceTransformerModules:
    """What a sentence-transformers checkpoint folder says about its pipeline."""

    transformer_dir: Path
    pooling: PoolingMode | None
    normalize: bool
    max_seq_length: int | None


def read_modules(checkpoint: Path) -> SentenceTransformerModules:
    """Read `modules.json` and the pooling config; plain HF folders give no pooling."""
    modules_file = checkpoint / "modules.json"
    if not modules_file.exists():
        return SentenceTransformerModules(checkpoint, None, False, None)
    modules = json.loads(modules_file.read_text())
    transformer_dir, pooling, normalize = checkpoint, None, False
    for module in modules:
        kind = module["type"].rsplit(".", 1)[-1]
        path = checkpoint / module.get("path", "")
        if kind == "Transformer":
            transformer_dir = path
        elif kind == "Pooling":
            pooling = _pooling_mode(json.loads((path / "config.json").read_text()))
        elif kind == "Normalize":
            normalize = True
        else:
            raise ExportError(f"unsupported sentence-transformers module {module['type']} in {modules_file}")
    bert_config = transformer_dir / "sentence_bert_config.json"
    max_len = json.loads(bert_config.read_text()).get("max_seq_length") if bert_config.exists() else None
    return SentenceTransformerModules(transformer_dir, pooling, normalize, max_len)


def _pooling_mode(config: dict[str, object]) -> PoolingMode:
    if config.get("pooling_mode_weightedmean_tokens"):
        raise ExportError("weighted-mean pooling is not supported")
    modes = [mode for key, mode in _ST_KEYS.items() if config.get(key)]
    if len(modes) != 1:
        raise ExportError(f"exactly one pooling mode must be set, found {modes or 'none'}")
    return modes[0]


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: PoolingMode) -> torch.Tensor:
    """`[batch, seq, hidden]` → `[batch, hidden]` in fp32, ignoring padded positions."""
    hidden = hidden.float()
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        return torch.where(m > 0, hidden, torch.full_like(hidden, -1e9)).max(dim=1).values
    if mode == "lasttoken":
        # Position of the last attended token: right or left padding alike.
        positions = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)
        last = (mask * positions).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    summed = (hidden * m).sum(dim=1)
    counts = m.sum(dim=1).clamp(min=1e-9)
    return summed / (counts if mode == "mean" else counts.sqrt())

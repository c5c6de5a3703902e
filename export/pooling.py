"""Which pooling a sentence-transformers checkpoint declares (graphs/pooling.py computes it).

The mode comes from the checkpoint (`modules.json` → `1_Pooling/config.json`);
an unsupported mode is an error at load time, never a silent fallback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

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
    kinds: tuple[str, ...] = ()  # every module's kind (`Transformer`, `Pooling`, `SpladePooling`…)


def read_modules(checkpoint: Path) -> SentenceTransformerModules:
    """Read `modules.json` and the pooling config; plain HF folders give no pooling."""
    modules_file = checkpoint / "modules.json"
    if not modules_file.exists():
        return SentenceTransformerModules(checkpoint, None, False, None)
    modules = json.loads(modules_file.read_text())
    transformer_dir, pooling, normalize = checkpoint, None, False
    kinds = tuple(module["type"].rsplit(".", 1)[-1] for module in modules)
    for module, kind in zip(modules, kinds, strict=True):
        path = checkpoint / module.get("path", "")
        if kind in ("Transformer", "MLMTransformer"):  # a SparseEncoder's MLM backbone is the latter
            transformer_dir = path
        elif kind == "SpladePooling":
            _check_splade(json.loads((path / "config.json").read_text()))
        elif kind == "Pooling":
            pooling = _pooling_mode(json.loads((path / "config.json").read_text()))
        elif kind == "Normalize":
            normalize = True
        else:
            raise ExportError(f"unsupported sentence-transformers module {module['type']} in {modules_file}")
    bert_config = transformer_dir / "sentence_bert_config.json"
    max_len = json.loads(bert_config.read_text()).get("max_seq_length") if bert_config.exists() else None
    return SentenceTransformerModules(transformer_dir, pooling, normalize, max_len, kinds)


def _check_splade(config: dict[str, object]) -> None:
    """SPLADE's max pooling of `log(1 + relu(logits))`, as SPLADE v2 and v3 use it; the sum pooling of the
    first SPLADE and OpenSearch's double log are not served."""
    strategy, activation = config.get("pooling_strategy", "max"), config.get("activation_function", "relu")
    if (strategy, activation) != ("max", "relu"):
        raise ExportError(
            f"SpladePooling with pooling_strategy {strategy!r} and activation_function {activation!r} is not "
            "supported (only max of log(1 + relu(logits)))"
        )


def _pooling_mode(config: dict[str, object]) -> PoolingMode:
    if config.get("pooling_mode_weightedmean_tokens"):
        raise ExportError("weighted-mean pooling is not supported")
    modes = [mode for key, mode in _ST_KEYS.items() if config.get(key)]
    if len(modes) != 1:
        raise ExportError(f"exactly one pooling mode must be set, found {modes or 'none'}")
    return modes[0]

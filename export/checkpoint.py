"""Read a checkpoint folder and decide how it is served (family, pooling, lengths)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from export.errors import ExportError
from export.pooling import PoolingMode, read_modules
from export.specs import FamilySpec, spec_for
from runtime.text import TextLayout, make_buckets, special_token_frame


@dataclass(frozen=True)
class Plan:
    """Everything decided about one checkpoint before any export work starts."""

    checkpoint: Path
    transformer_dir: Path
    spec: FamilySpec
    model_type: str
    pooling: PoolingMode
    normalize: bool
    dimension: int
    layout: TextLayout
    tokenizer: Tokenizer


def _max_length(config: dict, st_max: int | None, spec: FamilySpec, override: int | None) -> int:
    limit = config.get("max_position_embeddings")
    if config.get("model_type") in ("roberta", "xlm-roberta") and limit:
        limit -= 2  # RoBERTa offsets positions by padding_idx + 1
    chosen = override or st_max or spec.default_max_length or limit
    if chosen is None:
        raise ExportError("cannot tell the maximum sequence length; pass --max-length")
    if limit is not None and chosen > limit:
        raise ExportError(f"max length {chosen} exceeds the model's {limit} positions")
    return int(chosen)


def _served_tokenizer(transformer_dir: Path) -> Tokenizer:
    """The fast tokenizer as transformers builds it (handles vocab.txt-only folders too)."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(transformer_dir))
    if not hf.is_fast:
        raise ExportError(f"{transformer_dir} has no fast tokenizer; convert it first")
    tok = Tokenizer.from_str(hf.backend_tokenizer.to_str())
    tok.no_truncation()
    tok.no_padding()
    return tok


def plan(checkpoint: Path, max_length: int | None = None) -> Plan:
    """Inspect `checkpoint` (a Hugging Face or sentence-transformers folder)."""
    if not (checkpoint / "config.json").exists() and not (checkpoint / "modules.json").exists():
        raise ExportError(f"{checkpoint} is not a checkpoint folder (no config.json or modules.json)")
    modules = read_modules(checkpoint)
    config = json.loads((modules.transformer_dir / "config.json").read_text())
    model_type = config.get("model_type", "")
    spec = spec_for(model_type)
    tokenizer = _served_tokenizer(modules.transformer_dir)
    prefix, suffix = special_token_frame(tokenizer)
    length = _max_length(config, modules.max_seq_length, spec, max_length)
    pad_id = config.get("pad_token_id")
    layout = TextLayout(prefix, suffix, length, int(pad_id) if pad_id is not None else 0, make_buckets(length))
    has_modules = modules.pooling is not None
    return Plan(
        checkpoint=checkpoint,
        transformer_dir=modules.transformer_dir,
        spec=spec,
        model_type=model_type,
        pooling=modules.pooling if has_modules else spec.default_pooling,
        normalize=modules.normalize if has_modules else spec.default_normalize,
        dimension=int(config["hidden_size"]),
        layout=layout,
        tokenizer=tokenizer,
    )

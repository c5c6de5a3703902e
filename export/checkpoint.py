"""Read a checkpoint folder and decide how it is served (family, pooling, lengths, attention)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from export.errors import ExportError
from export.pooling import PoolingMode, read_modules
from export.specs import GME_MAX_PIXELS, GME_MIN_PIXELS, Attention, FamilySpec, spec_for
from runtime.images import ClipImageSpec
from runtime.qwen2vl import VisionSpec
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
    attention: Attention
    attention_signal: str  # why this attention mode was chosen
    dimension: int
    layout: TextLayout
    tokenizer: Tokenizer
    query_template: str
    default_instruction: str
    document_template: str
    image: ClipImageSpec | None = None  # CLIP's image tower
    vision: VisionSpec | None = None  # GME's (Qwen2-VL) image tower
    image_token_id: int | None = None


def _max_length(config: dict, st_max: int | None, spec: FamilySpec, override: int | None) -> int:
    limit = config.get("max_position_embeddings")
    if config.get("model_type") in ("roberta", "xlm-roberta") and limit:
        limit -= 2  # RoBERTa offsets positions by padding_idx + 1
    chosen = override or st_max or spec.default_max_length or limit
    if chosen is None:
        raise ExportError("cannot tell the maximum sequence length; pass --max-length")
    if limit is not None and chosen > limit:
        if override or st_max:
            raise ExportError(f"max length {chosen} exceeds the model's {limit} positions")
        chosen = limit
    return int(chosen)


def _served_tokenizer(transformer_dir: Path) -> tuple[Tokenizer, int | None]:
    """The fast tokenizer as transformers builds it, and its EOS id."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(transformer_dir))
    if not hf.is_fast:
        raise ExportError(f"{transformer_dir} has no fast tokenizer; convert it first")
    tok = Tokenizer.from_str(hf.backend_tokenizer.to_str())
    tok.no_truncation()
    tok.no_padding()
    return tok, hf.eos_token_id


def attention_of(checkpoint: Path, config: dict, spec: FamilySpec, override: Attention | None) -> tuple[Attention, str]:
    """Causal or bidirectional, and the signal that decided it.

    In order: the export flag; an explicit `is_causal` in config.json; the gte-Qwen2
    recipe, recognised by its `auto_map` pointing at the authors' `modeling_qwen`
    code (their bidirectional Qwen2Model); else the family's default.
    """
    if override is not None:
        return override, "--attention flag"
    if "is_causal" in config:
        return ("causal" if config["is_causal"] else "bidirectional"), "config.json is_causal"
    auto_map = config.get("auto_map", {})
    if config.get("model_type") == "qwen2" and any("modeling_qwen." in str(v) for v in auto_map.values()):
        source = "present" if (checkpoint / "modeling_qwen.py").exists() else "named in auto_map only"
        return "bidirectional", f"gte-Qwen2 recipe: auto_map → modeling_qwen ({source}; never executed)"
    return spec.attention, f"{spec.family} default"


def _prompt(checkpoint: Path, spec: FamilySpec) -> tuple[str, str]:
    """The query template and default instruction; sentence-transformers' `query` prompt may refine the latter."""
    if not spec.query_template:
        return "", ""
    instruction = spec.default_instruction
    st = checkpoint / "config_sentence_transformers.json"
    if st.exists():
        query = json.loads(st.read_text()).get("prompts", {}).get("query", "")
        if query.startswith("Instruct: ") and query.endswith("\nQuery: "):
            instruction = query.removeprefix("Instruct: ").removesuffix("\nQuery: ")
    return spec.query_template, instruction


def _image_spec(checkpoint: Path) -> ClipImageSpec:
    """Resize / crop / normalisation from `preprocessor_config.json` (CLIPImageProcessor's fields)."""
    path = checkpoint / "preprocessor_config.json"
    if not path.exists():
        raise ExportError(f"{checkpoint} has no preprocessor_config.json for its image tower")
    cfg = json.loads(path.read_text())
    size, crop = cfg.get("size", {}), cfg.get("crop_size", {})
    edge = size.get("shortest_edge") if isinstance(size, dict) else size
    crop_h, crop_w = (crop.get("height"), crop.get("width")) if isinstance(crop, dict) else (crop, crop)
    if not (edge and crop_h and crop_w):
        raise ExportError(f"unsupported image size settings in {path}: size={size}, crop_size={crop}")
    if not (cfg.get("do_resize", True) and cfg.get("do_center_crop", True) and cfg.get("do_normalize", True)):
        raise ExportError(f"{path} switches off resize, crop or normalisation, which the served path always applies")
    return ClipImageSpec(
        int(edge),
        int(crop_h),
        int(crop_w),
        tuple(cfg["image_mean"]),
        tuple(cfg["image_std"]),
        int(cfg.get("resample", 3)),
    )


def _vision_spec(checkpoint: Path, config: dict, min_pixels: int | None, max_pixels: int | None) -> VisionSpec:
    """GME's image bounds are the authors' (256·28² … 1280·28²) unless overridden; mean/std from the checkpoint."""
    path = checkpoint / "preprocessor_config.json"
    cfg = json.loads(path.read_text()) if path.exists() else {}
    vision = config.get("vision_config", {})
    return VisionSpec(
        min_pixels=min_pixels or GME_MIN_PIXELS,
        max_pixels=max_pixels or GME_MAX_PIXELS,
        mean=tuple(cfg.get("image_mean", (0.48145466, 0.4578275, 0.40821073))),
        std=tuple(cfg.get("image_std", (0.26862954, 0.26130258, 0.27577711))),
        patch_size=int(vision.get("patch_size", 14)),
        merge_size=int(vision.get("spatial_merge_size", 2)),
        temporal_patch_size=int(vision.get("temporal_patch_size", 2)),
    )


def plan(
    checkpoint: Path,
    max_length: int | None = None,
    attention: Attention | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> Plan:
    """Inspect `checkpoint` (a Hugging Face or sentence-transformers folder)."""
    if not (checkpoint / "config.json").exists() and not (checkpoint / "modules.json").exists():
        raise ExportError(f"{checkpoint} is not a checkpoint folder (no config.json or modules.json)")
    modules = read_modules(checkpoint)
    config = json.loads((modules.transformer_dir / "config.json").read_text())
    model_type = config.get("model_type", "")
    spec = spec_for(model_type)
    text_config = config.get("text_config", config) if "image" in spec.towers else config
    tokenizer, eos_id = _served_tokenizer(modules.transformer_dir)
    prefix, suffix = special_token_frame(tokenizer)
    if spec.append_eos:
        if eos_id is None:
            raise ExportError(f"{spec.family} needs an EOS token, and the tokenizer has none")
        suffix = (eos_id,)  # the tokenizer's post-processor may or may not add it (e5 with transformers ≥ 5 does not)
    length = _max_length(text_config, modules.max_seq_length, spec, max_length)
    pad_id = text_config.get("pad_token_id")
    pad_id = pad_id if isinstance(pad_id, int) else (eos_id if eos_id is not None else 0)
    layout = TextLayout(prefix, suffix, length, int(pad_id), make_buckets(length))
    has_modules = modules.pooling is not None
    mode, signal = attention_of(modules.transformer_dir, config, spec, attention)
    template, instruction = _prompt(checkpoint, spec)
    document_template = spec.document_template
    return Plan(
        checkpoint=checkpoint,
        transformer_dir=modules.transformer_dir,
        spec=spec,
        model_type=model_type,
        pooling=modules.pooling if has_modules else spec.default_pooling,
        normalize=modules.normalize if has_modules else spec.default_normalize,
        attention=mode,
        attention_signal=signal,
        dimension=int(config["projection_dim"] if spec.family == "clip" else text_config["hidden_size"]),
        layout=layout,
        tokenizer=tokenizer,
        query_template=template,
        default_instruction=instruction,
        document_template=document_template,
        image=_image_spec(checkpoint) if spec.family == "clip" else None,
        vision=_vision_spec(checkpoint, config, min_pixels, max_pixels) if spec.family == "gme" else None,
        image_token_id=config.get("image_token_id"),
    )

"""Read a checkpoint folder and decide how it is served: family, pooling, lengths, attention, prompts."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenizers import Tokenizer

from contract import EnsembleCard, TextParams
from export.errors import ExportError
from export.families import family_for
from export.families.base import EOS_TOKEN, Family, Prompts
from export.pooling import read_modules
from export.request import Attention, GraphSettings, PoolingMode
from export.towers.pair import PairFrame, pair_frame
from runtime.text import TextLayout, make_buckets, special_token_frame

if TYPE_CHECKING:
    from export.request import ExportRequest


@dataclass(frozen=True)
class Plan:
    """Everything decided about one checkpoint before any export work starts."""

    checkpoint: Path
    transformer_dir: Path
    family: Family
    model_type: str
    pooling: PoolingMode
    normalize: bool
    attention: Attention
    attention_signal: str  # why this attention mode was chosen
    dimension: int
    layout: TextLayout
    tokenizer: Tokenizer
    prompts: Prompts
    image: Any = None  # the image tower's settings, as its `read` returns them
    image_token_id: int | None = None
    pair: PairFrame | None = None  # a cross-encoder's: how its tokenizer frames a (query, document) pair
    score_tokens: tuple[int, int] | None = None  # an LLM reranker's (yes, no) token ids
    special_ids: tuple[int, ...] = ()  # the tokenizer's cls, eos, pad and unk ids: a sparse head weighs none

    @property
    def graph_settings(self) -> GraphSettings:
        return GraphSettings(self.pooling, self.normalize, self.image_token_id, self.score_tokens, self.special_ids)

    def text_params(self, request: ExportRequest) -> TextParams:
        """The tokenisation parameters of every preprocessor that tokenises (text, and fused image items)."""
        lay, prompts = self.layout, self.prompts
        return TextParams(
            "tokenizer.json",
            lay.prefix_ids,
            lay.suffix_ids,
            lay.max_length,
            lay.pad_id,
            lay.buckets,
            request.serving.default_truncate,
            prompts.query_template,
            prompts.default_instruction,
            prompts.document_template,
        )

    def card(self, request: ExportRequest) -> EnsembleCard:
        """What the adapter learns about the model from its text ensemble."""
        image = self.family.image_tower
        return EnsembleCard(
            dimension=self.dimension,
            max_tokens=self.layout.max_length,
            hf_id=request.hf_id,
            aliases=request.aliases,
            modalities=tuple(t.name for t in self.family.towers),
            image_ensemble=f"{request.name}_image" if image is not None else "",
            fuses_modalities=image is not None and image.fuses_text,
            controls=self.family.text_tower.controls,
            image_controls=image.controls if image is not None else (),
            task=self.family.task,
            tasks=tuple(t for t in self.family.text_tower.head.tasks if t != self.family.task),
            image_batch=image.items_per_call if image is not None else 0,
            vocab_size=self.tokenizer.get_vocab_size(with_added_tokens=True),
            query_template=bool(self.prompts.query_template),
            matryoshka_dimensions=self.family.matryoshka.dimensions,
            matryoshka_min_dimension=self.family.matryoshka.min_dimension,
            engine=f"{request.target} {request.resolved_dtype(self)}",
            engine_candidates=request.engine_candidates,
            int8_ranges=request.int8_ranges,
        )


def _max_length(config: dict, st_max: int | None, family: Family, override: int | None) -> int:
    limit = config.get("max_position_embeddings")
    if config.get("model_type") in ("roberta", "xlm-roberta") and limit:
        limit -= 2  # RoBERTa offsets positions by padding_idx + 1
    chosen = override or st_max or family.max_length or limit
    if chosen is None:
        raise ExportError("cannot tell the maximum sequence length; pass --max-length")
    if limit is not None and chosen > limit:
        if override or st_max:
            raise ExportError(f"max length {chosen} exceeds the model's {limit} positions")
        chosen = limit
    return int(chosen)


def task_of(config: dict) -> str:
    """What a checkpoint is for, by its architecture: a sequence classifier reranks."""
    architectures = config.get("architectures") or []
    return "rerank" if any(a.endswith("ForSequenceClassification") for a in architectures) else "embed"


def reranker_signs(checkpoint: Path, config: dict, hf_id: str = "") -> list[str]:
    """What says a checkpoint is a reranker besides its architecture (a Qwen3-Reranker is a plain causal
    LM): its folder's name, the id it was saved from or is served as, its model card's `pipeline_tag`."""
    signs = [
        f"{what} {name!r}"
        for what, name in (("folder", checkpoint.name), ("saved from", config.get("_name_or_path", "")), ("id", hf_id))
        if "reranker" in str(name).lower()
    ]
    card = checkpoint / "README.md"
    if card.is_file():
        with card.open(encoding="utf-8", errors="replace") as f:
            head = f.read(16384)
        if head.startswith("---") and re.search(r"^pipeline_tag:\s*text-ranking\s*$", head.split("\n---", 1)[0], re.M):
            signs.append("README.md's pipeline_tag text-ranking")
    return signs


def _served_tokenizer(transformer_dir: Path) -> tuple[Any, Tokenizer, int | None]:
    """Transformers' tokenizer (the reference), the fast tokenizer it is built on, and its EOS id."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(transformer_dir))
    if not hf.is_fast:
        raise ExportError(f"{transformer_dir} has no fast tokenizer; convert it first")
    tok = Tokenizer.from_str(hf.backend_tokenizer.to_str())
    tok.no_truncation()
    tok.no_padding()
    return hf, tok, hf.eos_token_id


def _final_token(family: Family, tokenizer: Tokenizer, eos_id: int | None) -> int:
    """The id of the token every sequence of `family` ends with."""
    if family.final_token == EOS_TOKEN:
        if eos_id is None:
            raise ExportError(f"{family.name} ends every sequence with EOS, and the tokenizer has none")
        return eos_id
    token_id = tokenizer.token_to_id(family.final_token or "")
    if token_id is None:
        raise ExportError(f"{family.name} ends every sequence with {family.final_token!r}, which the tokenizer lacks")
    return token_id


def attention_of(checkpoint: Path, config: dict, family: Family, override: Attention | None) -> tuple[Attention, str]:
    """Causal or bidirectional, and the signal that decided it: in order, the export flag; an explicit
    `is_causal` in config.json; a recipe the family recognises in the checkpoint; the family's default."""
    if override is not None:
        return override, "--attention flag"
    if "is_causal" in config:
        return ("causal" if config["is_causal"] else "bidirectional"), "config.json is_causal"
    recognised = family.attention_signal(checkpoint, config) if family.attention_signal else None
    return recognised or (family.attention, f"{family.name} default")


def _prompts(checkpoint: Path, family: Family) -> Prompts:
    """The family's prompts; the checkpoint's sentence-transformers `query` prompt, when it is the family's
    template with another instruction, sets the default instruction."""
    prompts = family.prompts
    st = checkpoint / "config_sentence_transformers.json"
    template = prompts.query_template
    if not template or not st.exists() or not template.endswith("{text}") or "{instruction}" not in template:
        return prompts
    query = json.loads(st.read_text()).get("prompts", {}).get("query", "")
    before, after = template.removesuffix("{text}").split("{instruction}", 1)
    if query.startswith(before) and query.endswith(after) and len(query) > len(before) + len(after):
        instruction = query[len(before) : len(query) - len(after)]
        return Prompts(template, instruction, prompts.document_template)
    return prompts


def _lookup(config: dict, path: str) -> Any:
    """`config["a"]["b"]` for the path `a.b`; None where a key is missing."""
    value: Any = config
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def plan(checkpoint: Path, request: ExportRequest | None = None, max_length: int | None = None) -> Plan:
    """Inspect `checkpoint` (a Hugging Face or sentence-transformers folder) for `request` (its overrides)."""
    if not (checkpoint / "config.json").exists() and not (checkpoint / "modules.json").exists():
        raise ExportError(f"{checkpoint} is not a checkpoint folder (no config.json or modules.json)")
    modules = read_modules(checkpoint)
    config = json.loads((modules.transformer_dir / "config.json").read_text())
    model_type = config.get("model_type", "")
    found = frozenset({*(path.name for path in modules.transformer_dir.iterdir()), *modules.kinds})
    task = (request.task if request else None) or task_of(config)
    signs = [] if request is None or request.task else reranker_signs(checkpoint, config, request.hf_id)
    if task == "embed" and signs:
        raise ExportError(
            f"{checkpoint} looks like a reranker ({'; '.join(signs)}) while its architecture would embed: pass "
            "--task rerank to score (query, document) pairs with it, or --task embed to embed with it all the same"
        )
    family = family_for(model_type, request.task if request else None, found, task)
    text_config = config.get(family.text_config, config) if family.text_config else config
    hf_tokenizer, tokenizer, eos_id = _served_tokenizer(modules.transformer_dir)
    prefix, suffix = special_token_frame(tokenizer)
    if family.final_token is not None:
        # The tokenizer's post-processor may or may not add it (e5 with transformers ≥ 5 does not).
        suffix = (_final_token(family, tokenizer, eos_id),)
    length = _max_length(text_config, modules.max_seq_length, family, request.max_length if request else max_length)
    pad_id = text_config.get("pad_token_id")
    pad_id = pad_id if isinstance(pad_id, int) else (eos_id if eos_id is not None else 0)
    layout = TextLayout(prefix, suffix, length, int(pad_id), make_buckets(length))
    has_modules = modules.pooling is not None
    mode, signal = attention_of(modules.transformer_dir, config, family, request.attention if request else None)
    dimension = 1 if family.task == "rerank" else _lookup(config, family.dimension_key)
    if dimension is None:
        raise ExportError(f"config.json has no {family.dimension_key!r}, the embedding size of {family.name}")
    labels = len(config.get("id2label") or {"0": ""})
    if family.task == "rerank" and labels != 1:
        raise ExportError(f"a reranker scores with one label; this checkpoint's classifier has {labels}")
    image = family.image_tower
    return Plan(
        checkpoint=checkpoint,
        transformer_dir=modules.transformer_dir,
        family=family,
        model_type=model_type,
        pooling=modules.pooling if has_modules else family.pooling,
        normalize=modules.normalize if has_modules else family.normalize,
        attention=mode,
        attention_signal=signal,
        dimension=int(dimension),
        layout=layout,
        tokenizer=tokenizer,
        prompts=_prompts(checkpoint, family),
        image=image.read(checkpoint, config, request) if image is not None else None,
        image_token_id=config.get("image_token_id"),
        pair=pair_frame(hf_tokenizer, tokenizer) if family.task == "rerank" and not family.score_tokens else None,
        score_tokens=_score_tokens(tokenizer, family.score_tokens),
        special_ids=_special_ids(hf_tokenizer),
    )


def _special_ids(hf_tokenizer: Any) -> tuple[int, ...]:
    """The ids of the tokenizer's cls, eos, pad and unk tokens, as FlagEmbedding's BGE-M3 drops them from
    its lexical weights (`special_tokens_map`, `convert_tokens_to_ids`)."""
    named = [hf_tokenizer.special_tokens_map.get(t) for t in ("cls_token", "eos_token", "pad_token", "unk_token")]
    return tuple(sorted({hf_tokenizer.convert_tokens_to_ids(t) for t in named if t is not None}))


def _score_tokens(tokenizer: Tokenizer, tokens: tuple[str, ...]) -> tuple[int, int] | None:
    """The ids of an LLM reranker's (yes, no) tokens, as `tokenizer.convert_tokens_to_ids` finds them."""
    if not tokens:
        return None
    ids = [tokenizer.token_to_id(t) for t in tokens]
    missing = [t for t, i in zip(tokens, ids, strict=True) if i is None]
    if missing:
        raise ExportError(f"the tokenizer has no token {', '.join(map(repr, missing))}, which the score reads")
    return ids[0], ids[1]

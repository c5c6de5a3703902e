"""The pair tower of a cross-encoder reranker: (QUERY, TEXT) rows → pair preprocessor (the tokenizer's
pair frame and longest-first truncation) → encoder with its classification head → `SCORE` (the raw
logit; the adapter applies the sigmoid), in the `<model>` ensemble."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from contract import (
    INSTRUCTION,
    QUERY,
    RERANK_CONTROLS,
    TEXT,
    TOKEN_COUNT,
    TRUNCATE,
    PairParams,
    Parameters,
    PromptPairParams,
)
from export.configs import Step, Tensor, ensemble, python_model, string, token_count
from export.errors import ExportError
from export.heads import SCORED
from export.towers.base import GraphBuilder, Samples, Tower, TritonModel
from export.towers.engines import engine_models
from runtime.pairs import PairLayout, encode_pairs, encode_prompted
from runtime.text import pad

if TYPE_CHECKING:
    import torch

    from export.checkpoint import Plan
    from export.request import ExportRequest, Profile, Shapes

TYPES = "token_type_ids"

# Fixed validation pairs: short and long, a query longer than its document, text that is not ASCII,
# and a pair over the limit (truncated), so the frame, the token types and padding are exercised.
VALIDATION_PAIRS = (
    ("what is triton", "Triton Inference Server serves models from ONNX Runtime and TensorRT engines."),
    ("a cat", "The quick brown fox jumps over the lazy dog."),
    ("which engines does Triton serve? " * 6, "ONNX Runtime."),
    ("Ünïcödé", "中文, emoji 🚀 and numbers 12345. " * 200),
)


@dataclass(frozen=True)
class PairFrame:
    """How the model's tokenizer frames a pair: `prefix a middle b suffix`, and the token types it returns."""

    prefix_ids: tuple[int, ...]
    middle_ids: tuple[int, ...]
    suffix_ids: tuple[int, ...]
    second_type: int  # the token type of `b suffix` (`prefix a middle` are type 0)
    types: bool  # the tokenizer returns token types (BERT), or the model takes none (XLM-R: zeros)


def pair_frame(hf_tokenizer, tok) -> PairFrame:
    """Read the frame off the reference tokenizer: `hf_tokenizer("hello", "world")` around the bare ids."""
    a = tok.encode("hello", add_special_tokens=False).ids
    b = tok.encode("world", add_special_tokens=False).ids
    encoded = hf_tokenizer("hello", "world")
    full, types = list(encoded["input_ids"]), encoded.get("token_type_ids")
    for i in range(len(full)):
        if full[i : i + len(a)] != a:
            continue
        for j in range(i + len(a), len(full)):
            if full[j : j + len(b)] == b:
                kinds = list(types) if types is not None else [0] * len(full)
                first, second = set(kinds[:j]), set(kinds[j:])
                if first != {0} or len(second) != 1:
                    raise ExportError(f"the tokenizer's pair token types {kinds} are not two segments")
                return PairFrame(
                    tuple(full[:i]),
                    tuple(full[i + len(a) : j]),
                    tuple(full[j + len(b) :]),
                    second.pop(),
                    types is not None,
                )
    raise ExportError("cannot locate a pair's two texts inside the tokenizer's framed sequence")


def pair_layout(p: Plan) -> PairLayout:
    frame, lay = _frame(p), p.layout
    return PairLayout(
        frame.prefix_ids, frame.middle_ids, frame.suffix_ids, frame.second_type, lay.max_length, lay.pad_id, lay.buckets
    )


def pair_params(p: Plan, request: ExportRequest) -> PairParams:
    lay = pair_layout(p)
    return PairParams(
        "tokenizer.json",
        lay.prefix_ids,
        lay.middle_ids,
        lay.suffix_ids,
        lay.second_type,
        lay.max_length,
        lay.pad_id,
        lay.buckets,
        request.serving.default_truncate,
    )


def _frame(p: Plan) -> PairFrame:
    if p.pair is None:
        raise ExportError(f"{p.family.name} scores pairs, and the plan holds no pair frame")
    return p.pair


class PairTower(Tower):
    """A cross-encoder's: the pair framed as its tokenizer frames it, with token types where it gives them."""

    name, role, default_head, hosted = "text", "encoder", SCORED, False
    controls = RERANK_CONTROLS
    shell = "pair_preprocess_model"

    def __init__(self, graph: GraphBuilder) -> None:
        super().__init__(graph)

    def params(self, p: Plan, request: ExportRequest) -> Parameters:
        return pair_params(p, request)

    def encode(self, p: Plan, queries: list[str], documents: list[str]) -> list[tuple[list[int], list[int]]]:
        return encode_pairs(p.tokenizer, queries, documents, pair_layout(p), "END")

    def _inputs(self, p: Plan) -> tuple[str, ...]:
        return ("input_ids", "attention_mask", TYPES) if _frame(p).types else ("input_ids", "attention_mask")

    def samples(self, p: Plan) -> Samples:
        import torch

        ids = torch.ones((2, min(16, p.layout.max_length)), dtype=torch.int64)
        batch, seq = torch.export.Dim("batch", max=4096), torch.export.Dim("seq", max=p.layout.max_length)
        samples = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if TYPES in self._inputs(p):
            samples[TYPES] = torch.zeros_like(ids)
            samples[TYPES][:, 8:] = 1
        return samples, {name: {0: batch, 1: seq} for name in samples}

    def feeds(self, p: Plan, graphs: dict[str, torch.nn.Module]) -> dict[str, np.ndarray]:
        queries, documents = zip(*VALIDATION_PAIRS, strict=True)
        pairs = self.encode(p, list(queries), list(documents))
        batch = pad([ids for ids, _ in pairs], p.layout, [types for _, types in pairs])
        feeds = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, TYPES: batch.token_type_ids}
        return {name: feeds[name] for name in self._inputs(p)}

    def timing_batches(self, p: Plan, texts: list[str], rows: int) -> list[dict[str, np.ndarray]]:
        """Each text as a document beside one fixed query."""
        pairs = sorted(self.encode(p, ["what does this engine serve?"] * len(texts), texts), key=lambda r: len(r[0]))
        batches = []
        for start in range(0, len(pairs), rows):
            part = pairs[start : start + rows]
            batch = pad([ids for ids, _ in part], p.layout, [types for _, types in part])
            width = int(batch.attention_mask.sum(axis=1).max())
            feeds = {
                "input_ids": batch.input_ids[:, :width],
                "attention_mask": batch.attention_mask[:, :width],
                TYPES: batch.token_type_ids[:, :width],
            }
            batches.append({name: feeds[name] for name in self._inputs(p)})
        return batches

    def engine_io(self, p: Plan) -> tuple[list[Tensor], list[Tensor]]:
        inputs = [Tensor(n, mc.TYPE_INT64, (-1, -1)) for n in self._inputs(p)]
        return inputs, self.head.engine(p)

    def tensorrt_shapes(self, p: Plan, profile: Profile, request: ExportRequest) -> Shapes:
        shape = next(iter(profile.shapes().values()))
        return {name: shape for name in self._inputs(p)}

    def models(self, p: Plan, request: ExportRequest) -> list[TritonModel]:
        name, serving = request.name, request.serving
        inputs = [string(TEXT), string(QUERY), *(string(n, optional=True) for n in self.controls)]
        tokens = [Tensor(n, mc.TYPE_INT64, (-1,)) for n in self._inputs(p)]
        preprocess = python_model(
            f"{name}_preprocess", inputs, [*tokens, token_count()], [self.params(p, request)], serving
        )
        rows = max(serving.encoder_max_batch_size, serving.max_batch_size)
        outputs = self.head.served(p)
        engines = engine_models(self, p, request, tokens, outputs, "length_packed", rows)
        token_names = tuple(t.name for t in tokens)
        steps = [
            Step(preprocess.name, tuple(t.name for t in inputs), (*token_names, TOKEN_COUNT)),
            Step(self.engine_model(request), token_names, self.head.names),
        ]
        ens = ensemble(name, inputs, [*outputs, token_count()], steps, serving, p.card(request))
        return [TritonModel(ens), TritonModel(preprocess, self.shell, tokenizer=True), *engines]


@dataclass(frozen=True)
class RerankPrompt:
    """An LLM reranker's wording of a pair: `prefix`, then `template` (`{instruction}`, `{query}`,
    `{document}`) cut to the room left, then `suffix`; tokenised without special tokens."""

    prefix: str
    template: str
    suffix: str
    default_instruction: str


class PromptPairTower(PairTower):
    """An LLM reranker's (Qwen3-Reranker): the pair worded by the prompt and tokenised as one text;
    its score head reads the last token (`export/families/qwen3_reranker.py`)."""

    controls = (TRUNCATE, INSTRUCTION)
    shell = "prompt_pair_preprocess_model"

    def __init__(self, graph: GraphBuilder, prompt: RerankPrompt) -> None:
        super().__init__(graph)
        self.prompt = prompt

    def _inputs(self, p: Plan) -> tuple[str, ...]:
        return ("input_ids", "attention_mask")

    def params(self, p: Plan, request: ExportRequest) -> PromptPairParams:
        def ids(text: str) -> tuple[int, ...]:
            return tuple(p.tokenizer.encode(text, add_special_tokens=False).ids)

        lay, prompt = p.layout, self.prompt
        return PromptPairParams(
            "tokenizer.json",
            prompt.template,
            prompt.default_instruction,
            ids(prompt.prefix) + lay.prefix_ids,  # and whatever the tokenizer's post-processor adds around a text
            lay.suffix_ids + ids(prompt.suffix),
            lay.max_length,
            lay.pad_id,
            lay.buckets,
            request.serving.default_truncate,
        )

    def encode(self, p: Plan, queries: list[str], documents: list[str]) -> list[tuple[list[int], list[int]]]:
        from export.request import ExportRequest

        params = self.params(p, ExportRequest(p.checkpoint, p.checkpoint, "validation"))
        return encode_prompted(p.tokenizer, queries, documents, params, "END")

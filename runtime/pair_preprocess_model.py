"""Triton Python model: (QUERY, TEXT) rows → framed pair token ids (a cross-encoder's `<model>_preprocess` step)."""

from __future__ import annotations

import triton_python_backend_utils as pb_utils

from contract import (
    MAX_DOC_TOKENS,
    QUERY,
    TEXT,
    TOKEN_COUNT,
    TRUNCATE,
    PairParams,
    expand_repeats,
    model_config,
    parameters,
    version_dir,
)
from runtime.errors import InputError
from runtime.pairs import PairLayout, encode_pairs
from runtime.preprocess_model import strings
from runtime.text import load_tokenizer, pad, truncate_mode

TYPES = "token_type_ids"


class TritonPythonModel:
    """Shared by every reranker's preprocessor: the rows, the truncation mode, the padded batch; how a
    pair becomes ids is `_encode` (here the tokenizer's pair frame; Qwen3-Reranker's prompt in
    `prompt_pair_preprocess_model`)."""

    params_type: type = PairParams

    def initialize(self, args: dict[str, str]) -> None:
        config = model_config(args)
        self.params = self.params_type.from_parameters(parameters(config))
        self.tokenizer = load_tokenizer(str(version_dir(args) / self.params.tokenizer))
        self.types = any(o["name"] == TYPES for o in config["output"])  # the model takes token types (BERT)

    def _encode(self, request, queries: list[str], documents: list[str], mode: str):
        cap = strings(request, MAX_DOC_TOKENS)
        if cap and not cap[0].isdigit():
            raise InputError(f"max_tokens_per_doc must be a positive integer, got {cap[0][:20]!r}")
        max_doc = int(cap[0]) if cap and int(cap[0]) > 0 else None
        return encode_pairs(self.tokenizer, queries, documents, PairLayout.of(self.params), mode, max_doc)

    def _response(self, request):
        documents = strings(request, TEXT) or []
        try:
            queries = expand_repeats(strings(request, QUERY) or [], "query")
        except ValueError as exc:
            raise InputError(str(exc)) from exc
        if len(queries) != len(documents):
            raise InputError(f"{len(documents)} documents came with {len(queries)} queries")
        mode = truncate_mode(strings(request, TRUNCATE), self.params.default_truncate)
        pairs = self._encode(request, queries, documents, mode)
        batch = pad([ids for ids, _ in pairs], self.params, [types for _, types in pairs])
        tensors = [
            pb_utils.Tensor("input_ids", batch.input_ids),
            pb_utils.Tensor("attention_mask", batch.attention_mask),
        ]
        if self.types:
            tensors.append(pb_utils.Tensor(TYPES, batch.token_type_ids))
        return pb_utils.InferenceResponse(output_tensors=[*tensors, pb_utils.Tensor(TOKEN_COUNT, batch.token_count)])

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._response(request))
            except InputError as exc:
                error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses

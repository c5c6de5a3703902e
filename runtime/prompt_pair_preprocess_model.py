"""Triton Python model: (QUERY, TEXT) rows → an LLM reranker's prompt token ids (Qwen3-Reranker's preprocess step)."""

from __future__ import annotations

import triton_python_backend_utils as pb_utils

from runtime.contract import (
    INSTRUCTION,
    QUERY,
    TEXT,
    TOKEN_COUNT,
    TRUNCATE,
    PromptPairParams,
    model_config,
    parameters,
    version_dir,
)
from runtime.errors import InputError
from runtime.pairs import encode_prompted, pad_pairs
from runtime.preprocess_model import strings
from runtime.text import TextLayout, load_tokenizer


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.params = p = PromptPairParams.from_parameters(parameters(model_config(args)))
        self.layout = TextLayout(p.prefix_ids, p.suffix_ids, p.max_length, p.pad_id, p.buckets)
        self.tokenizer = load_tokenizer(str(version_dir(args) / p.tokenizer))

    def _response(self, request):
        documents = strings(request, TEXT) or []
        queries = strings(request, QUERY) or []
        if len(queries) != len(documents):
            raise InputError(f"{len(documents)} documents came with {len(queries)} queries")
        truncate, instruction = strings(request, TRUNCATE), strings(request, INSTRUCTION)
        mode = truncate[0].upper() if truncate and truncate[0] else self.params.default_truncate
        task = instruction[0] if instruction and instruction[0] else None
        rows = encode_prompted(self.tokenizer, queries, documents, self.params, mode, task)
        batch = pad_pairs(rows, self.layout)
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("input_ids", batch.input_ids),
                pb_utils.Tensor("attention_mask", batch.attention_mask),
                pb_utils.Tensor(TOKEN_COUNT, batch.token_count),
            ]
        )

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._response(request))
            except InputError as exc:
                error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses

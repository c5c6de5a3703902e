"""Triton Python model: (QUERY, TEXT) rows → an LLM reranker's prompt token ids (Qwen3-Reranker's preprocess step)."""

from __future__ import annotations

from contract import INSTRUCTION, PromptPairParams
from runtime import pair_preprocess_model
from runtime.pairs import encode_prompted
from runtime.preprocess_model import strings


class TritonPythonModel(pair_preprocess_model.TritonPythonModel):
    params_type = PromptPairParams

    def _encode(self, request, queries: list[str], documents: list[str], mode: str):
        instruction = strings(request, INSTRUCTION)
        task = instruction[0] if instruction and instruction[0] else None
        return encode_prompted(self.tokenizer, queries, documents, self.params, mode, task)

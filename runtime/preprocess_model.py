"""Triton Python model: text → padded token ids (the `<model>_preprocess` step)."""

from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils

from runtime.errors import InputError
from runtime.params import PreprocessParams, model_config, version_dir
from runtime.text import encode, frame_all, load_tokenizer, pad


def _strings(request, name: str) -> list[str] | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in tensor.as_numpy().reshape(-1)]


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.params = PreprocessParams.from_config(model_config(args), version_dir(args))
        self.tokenizer = load_tokenizer(str(self.params.tokenizer_path))

    def execute(self, requests):
        texts: list[list[str]] = []
        modes: list[str] = []
        for request in requests:
            texts.append(_strings(request, "TEXT") or [])
            truncate = _strings(request, "TRUNCATE")
            modes.append(truncate[0].upper() if truncate else self.params.default_truncate)
        contents = encode(self.tokenizer, [t for rows in texts for t in rows])
        responses = []
        start = 0
        for rows, mode in zip(texts, modes, strict=True):
            part, start = contents[start : start + len(rows)], start + len(rows)
            try:
                batch = pad(frame_all(part, self.params.layout, mode), self.params.layout)
            except InputError as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)))
                continue
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("input_ids", batch.input_ids),
                        pb_utils.Tensor("attention_mask", batch.attention_mask),
                        pb_utils.Tensor("TOKEN_COUNT", batch.token_count.astype(np.int32)),
                    ]
                )
            )
        return responses

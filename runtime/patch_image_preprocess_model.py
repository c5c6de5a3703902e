"""Triton Python model: one image item (+ optional text) → prompt ids with its image pads, patches, positions."""

from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils

from contract import (
    IMAGE,
    INPUT_TYPE,
    INSTRUCTION,
    TEXT,
    TOKEN_COUNT,
    PatchImageParams,
    TextParams,
    model_config,
    parameters,
    version_dir,
)
from runtime.errors import InputError
from runtime.qwen2vl import VisionSpec, gme_item
from runtime.text import Prompt, TextLayout, load_tokenizer, pad


def _first(request, name: str) -> str | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    value = tensor.as_numpy().reshape(-1)[0]
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        params = parameters(model_config(args))
        text, self.image = TextParams.from_parameters(params), PatchImageParams.from_parameters(params)
        self.layout, self.prompt, self.vision = TextLayout.of(text), Prompt.of(text), VisionSpec.of(self.image)
        self.tokenizer = load_tokenizer(str(version_dir(args) / text.tokenizer))

    def _outputs(self, request) -> list:
        blobs = pb_utils.get_input_tensor_by_name(request, IMAGE).as_numpy().reshape(-1)
        if len(blobs) != 1:
            raise InputError(f"the preprocessor takes one image item per request, got {len(blobs)}")
        instruction = _first(request, INSTRUCTION)
        item = gme_item(
            bytes(blobs[0]),
            _first(request, TEXT),
            _first(request, INPUT_TYPE),
            instruction or None,
            self.tokenizer,
            self.layout,
            self.prompt,
            self.vision,
            self.image.max_decoded_pixels,
        )
        batch = pad([item.ids], self.layout)
        return [
            pb_utils.Tensor("input_ids", batch.input_ids),
            pb_utils.Tensor("attention_mask", batch.attention_mask),
            pb_utils.Tensor(TOKEN_COUNT, batch.token_count),
            pb_utils.Tensor("pixel_values", item.pixel_values[None]),
            pb_utils.Tensor("position_ids", item.position_ids[None]),
            pb_utils.Tensor("segment_ids", np.zeros((1, len(item.pixel_values)), dtype=np.int64)),
        ]

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(pb_utils.InferenceResponse(output_tensors=self._outputs(request)))
            except InputError as exc:
                error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses

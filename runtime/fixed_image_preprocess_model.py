"""Triton Python model: encoded image bytes → CLIP `pixel_values` (the `<model>_image_preprocess` step)."""

from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils

from contract import IMAGE, TOKEN_COUNT, FixedImageParams, model_config, parameters
from runtime.errors import InputError
from runtime.images import ClipImageSpec, clip_pixels, decode_image


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.params = FixedImageParams.from_parameters(parameters(model_config(args)))
        self.spec = ClipImageSpec.of(self.params)

    def _pixels(self, request) -> np.ndarray:
        tensor = pb_utils.get_input_tensor_by_name(request, IMAGE)
        blobs = tensor.as_numpy().reshape(-1) if tensor is not None else []
        if len(blobs) == 0:
            raise InputError("the request holds no image")
        pixels = np.empty((len(blobs), 3, self.spec.crop_height, self.spec.crop_width), dtype=np.float32)
        for i, blob in enumerate(blobs):  # one decoded image alive at a time, not a whole call's
            pixels[i] = clip_pixels(decode_image(bytes(blob), self.params.max_decoded_pixels, i), self.spec, i)
        return pixels

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                pixels = self._pixels(request)
            except InputError as exc:
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))
                )
                continue
            count = np.zeros((pixels.shape[0], 1), dtype=np.int32)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor("pixel_values", pixels), pb_utils.Tensor(TOKEN_COUNT, count)]
                )
            )
        return responses

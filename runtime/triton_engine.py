"""An engine served by another Triton model (ONNX Runtime or TensorRT backend), called through BLS.

GME's hosts gather ragged batches from many requests (per-row image features, images of
different sizes) and pack them into one engine call; with the `onnxruntime` and `tensorrt`
targets that call goes to a native engine model with `max_batch_size: 0` instead of an
in-process ONNX Runtime session. Same `run(outputs, feed)` as an ONNX Runtime session.
"""

from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils


class EngineError(RuntimeError):
    pass


class TritonEngine:
    def __init__(self, model: str, input_dtypes: dict[str, str]) -> None:
        self.model = model
        self.input_dtypes = input_dtypes  # e.g. fp16 plans take fp16 features

    def run(self, output_names: list[str] | None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        if not output_names:
            raise EngineError("name the engine outputs to fetch")
        inputs = [
            pb_utils.Tensor(name, np.ascontiguousarray(value, dtype=self.input_dtypes.get(name, value.dtype)))
            for name, value in feed.items()
        ]
        options = {}
        if hasattr(pb_utils, "PreferredMemory"):  # outputs in CPU memory, whatever device the engine runs on
            options["preferred_memory"] = pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0)
        request = pb_utils.InferenceRequest(
            model_name=self.model, requested_output_names=list(output_names), inputs=inputs, **options
        )
        response = request.exec()
        if response.has_error():
            raise EngineError(f"{self.model}: {response.error().message()}")
        return [pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in output_names]

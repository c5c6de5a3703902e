"""Triton Python model hosting ONNX Runtime on the CPU (the `local` engine target).

Its inputs allow ragged batching, so one `execute` receives every pending request
whatever its padded length, and `run_packed` regroups their rows by length.

The bundled `tritonserver` of `nvidia-pytriton` has only the Python backend; this
shell gives it the same encoder I/O as the `onnxruntime` and `tensorrt` targets.
"""

from __future__ import annotations

import triton_python_backend_utils as pb_utils

from runtime.onnx_encoder import open_session, run_concatenated, run_packed, run_vision_packed
from runtime.params import EncoderParams, model_config, version_dir


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = model_config(args)
        self.params = EncoderParams.from_config(config, version_dir(args))
        self.inputs = [i["name"] for i in config["input"]]
        self.session = open_session(str(self.params.onnx_path), self.params.intra_op_threads, spinning=False)

    def execute(self, requests):
        feeds = []
        for r in requests:
            tensors = {name: pb_utils.get_input_tensor_by_name(r, name) for name in self.inputs}
            feeds.append({name: t.as_numpy() for name, t in tensors.items() if t is not None})  # optional inputs
        if self.params.batching == "vision_packed":
            outputs = run_vision_packed(self.session, feeds, self.params.output_name)
        elif self.params.packing is None:
            outputs = run_concatenated(self.session, feeds, self.params.output_name)
        else:
            outputs = run_packed(self.session, feeds, self.params.output_name, self.params.packing)
        return [
            pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.params.output_name, o)]) for o in outputs
        ]

"""Triton Python model hosting an encoder engine on ragged batches (the `local`, `openvino` and `torch`
targets, and GME's hosts).

Its inputs allow ragged batching, so one `execute` receives every pending request
whatever its padded length, and `run_packed` regroups their rows by length. The engine
is ONNX Runtime or OpenVINO in this process (`local`, `openvino`), the family's PyTorch graph in this process on
the instance's device (`torch`), or, for GME on the `onnxruntime` / `tensorrt` targets, a
native engine model called through BLS with the packed batch.

The bundled `tritonserver` of `nvidia-pytriton` has only the Python backend; this
shell gives it the same encoder I/O as the `onnxruntime` and `tensorrt` targets.
"""

from __future__ import annotations

import traceback

import triton_python_backend_utils as pb_utils

from contract import (
    IMAGE_EMBEDS,
    SPARSE_IDS,
    SPARSE_WEIGHTS,
    EncoderHostParams,
    TorchGraphParams,
    model_config,
    parameters,
    version_dir,
)
from runtime.compact import nonzero_entries
from runtime.onnx_encoder import Packing, open_onnx, run_concatenated, run_packed, run_vision_packed


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = model_config(args)
        self.params = p = EncoderHostParams.from_parameters(parameters(config))
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = tuple(o["name"] for o in config["output"])
        if p.sparse_source:  # the engine returns the vocabulary-wide source; the host sends its entries
            compacted = (SPARSE_IDS, SPARSE_WEIGHTS)
            self.outputs = (*(o for o in self.outputs if o not in compacted), p.sparse_source)
        # An output with a token axis first (`[-1]`, `[-1, width]`) holds a value per position: each request
        # gets it at its own padded width. A pooled one (`[dim]`, `[1]`) has none.
        self.per_token = frozenset(o["name"] for o in config["output"] if len(o["dims"]) and int(o["dims"][0]) == -1)
        self.packing = Packing(p.max_rows, p.max_tokens, p.max_padding)
        image = [i for i in config["input"] if i["name"] == IMAGE_EMBEDS]
        self.image_hidden = int(image[0]["dims"][-1]) if image else None  # GME's LM: the width of image features
        if p.engine_model:
            from runtime.triton_engine import TritonEngine

            self.session = TritonEngine(p.engine_model, p.engine_dtypes())
        elif "graph" in parameters(config):
            from runtime.torch_session import TorchSession, device_of

            graph = TorchGraphParams.from_parameters(parameters(config))
            self.session = TorchSession.load(version_dir(args), graph, device_of(args), p.intra_op_threads)
        else:
            path = str(version_dir(args) / p.onnx_file)
            self.session = open_onnx(path, p.onnx_runtime, p.onnx_dtype, p.intra_op_threads)
            if precision := getattr(self.session, "precision", ""):  # OpenVINO keeps f32 on a CPU without bf16
                pb_utils.Logger.log_info(f"{args['model_name']}: OpenVINO runs its matrix products in {precision}")

    def execute(self, requests):
        feeds = []
        for r in requests:
            tensors = {name: pb_utils.get_input_tensor_by_name(r, name) for name in self.inputs}
            feeds.append({name: t.as_numpy() for name, t in tensors.items() if t is not None})  # optional inputs
        try:
            if self.params.batching == "vision_packed":
                outputs = run_vision_packed(self.session, feeds, self.outputs, self.params.max_patches)
            elif self.params.batching == "concatenate":
                outputs = run_concatenated(self.session, feeds, self.outputs)
            else:
                outputs = run_packed(self.session, feeds, self.outputs, self.packing, self.image_hidden, self.per_token)
        except Exception:  # an engine failure fails this batch's requests, not the model
            # The detail (paths, engine internals) goes to Triton's log, not to the clients.
            pb_utils.Logger.log_error(f"{', '.join(self.outputs)} engine failed:\n{traceback.format_exc()}")
            error = pb_utils.TritonError("the encoder failed on this batch; see the Triton log")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        if self.params.sparse_source:
            for out in outputs:
                out[SPARSE_IDS], out[SPARSE_WEIGHTS] = nonzero_entries(out.pop(self.params.sparse_source))
        return [
            pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(name, rows) for name, rows in out.items()])
            for out in outputs
        ]

    def finalize(self) -> None:
        """Release the engine while the interpreter is whole: ONNX Runtime's thread pool then stops here,
        not during the stub's exit (no segfault at stop was seen on this machine; a precaution)."""
        self.session = None

"""The `openvino` target's engine: the exported ONNX graph compiled by OpenVINO for this CPU, behind the
same `run(outputs, feed)` as an ONNX Runtime session, so the host's packers batch it unchanged.

OpenVINO compiles the graph for the CPU it loads on (oneDNN kernels, AMX tiles where the CPU has them) and
runs a call with less overhead than PyTorch's eager dispatch. In `bfloat16` its matrix products run in
bf16 (`INFERENCE_PRECISION_HINT`) over the fp32 graph, which is what the export validated against the
fp32 reference; on a CPU without bf16 instructions OpenVINO keeps fp32. One infer request: the host runs
one call at a time, and Triton runs one host per instance.
"""

from __future__ import annotations

import numpy as np

PRECISION_HINTS = {"float32": "f32", "bfloat16": "bf16"}


def compile_config(dtype: str, threads: int = 0) -> dict[str, str]:
    """The CPU plugin's settings a host compiles with: `dtype`'s inference precision, one stream, `threads`
    threads (0: OpenVINO's choice), unpinned."""
    if dtype not in PRECISION_HINTS:
        raise ValueError(f"OpenVINO serves float32 or bfloat16 on the CPU, not {dtype}")
    config = {
        "INFERENCE_PRECISION_HINT": PRECISION_HINTS[dtype],
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": "1",
        # Unpinned: each instance's process pins its threads without knowing of the others. Pinned (OpenVINO's
        # default on Linux), two single-thread instances on 2 cores served 179 requests/s, unpinned 228
        # (all-MiniLM-L6-v2 in bf16, one text per request, concurrency 16).
        "ENABLE_CPU_PINNING": "NO",
    }
    if threads > 0:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    return config


class OpenVinoSession:
    def __init__(self, path: str, dtype: str = "float32", threads: int = 0) -> None:
        import openvino as ov

        config = compile_config(dtype, threads)
        core = ov.Core()
        self.compiled = core.compile_model(path, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.inputs = frozenset(i.get_any_name() for i in self.compiled.inputs)
        self.ports = {o.get_any_name(): o for o in self.compiled.outputs}  # looked up once, not per call
        self.names = list(self.ports)

    @property
    def precision(self) -> str:
        """What the CPU plugin runs its matrix products in ("bf16" only where the CPU has bf16 instructions)."""
        return self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()

    def run(self, output_names: list[str] | None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        results = self.request.infer({n: np.ascontiguousarray(a) for n, a in feed.items() if n in self.inputs})
        # Copies: the request's output buffers are reused by its next call.
        return [np.array(results[self.ports[name]]) for name in (output_names or self.names)]

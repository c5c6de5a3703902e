"""The `torch` target's engine: the family's graph in PyTorch, behind the same `run(outputs, feed)` as an
ONNX Runtime session, so the host's packers (runtime/onnx_encoder.py) batch it unchanged.

On a GPU the graph runs in the family's GPU dtype with PyTorch's scaled-dot-product attention (the
transformers default); on the CPU in fp32. Its output leaves as fp32 numpy, like every engine's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from contract import TorchGraphParams


def device_of(args: dict[str, str]) -> str:
    """Where Triton placed this instance: `cuda:<id>` for a KIND_GPU instance, else the CPU."""
    if args.get("model_instance_kind") == "GPU":
        return f"cuda:{int(args.get('model_instance_device_id', 0))}"
    return "cpu"


class TorchSession:
    def __init__(self, graph: torch.nn.Module, inputs: tuple[str, ...], device: str) -> None:
        self.graph = graph
        self.inputs = inputs
        self.device = torch.device(device)

    @classmethod
    def load(cls, version_dir: Path, params: TorchGraphParams, device: str, threads: int = 0) -> TorchSession:
        from export.torch_graphs import served_graph  # the export's own graph code, copied beside runtime/

        if device == "cpu" and threads > 0:
            torch.set_num_threads(threads)
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        return cls(served_graph(version_dir, params, device), params.inputs, device)

    def run(self, output_names: list[str] | None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        missing = [name for name in self.inputs if name not in feed]
        if missing:
            raise KeyError(f"the graph takes {', '.join(self.inputs)}; missing {', '.join(missing)}")
        with torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(feed[name])).to(self.device) for name in self.inputs]
            out = self.graph(*args)
            return [out.float().cpu().numpy()]

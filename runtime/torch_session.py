"""The `torch` target's engine: the family's graph in PyTorch, behind the same `run(outputs, feed)` as an
ONNX Runtime session, so the host's packers (runtime/onnx_encoder.py) batch it unchanged.

On a GPU the graph runs in the family's GPU dtype with PyTorch's scaled-dot-product attention (the
transformers default). On the CPU its weights stay fp32; with dtype bfloat16 its matrix products run in
bf16 under CPU autocast (AMX or AVX-512 BF16 kernels where the CPU has them, emulated elsewhere), while
pooling and normalisation stay fp32 (the graphs pool an fp32 copy of the hidden states). Its output
leaves as fp32 numpy, like every engine's.
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


def cpu_autocast(dtype: str, device: str) -> torch.dtype | None:
    """The autocast dtype of a CPU graph in `dtype` (bf16 matrix products over fp32 weights), else None."""
    return torch.bfloat16 if device == "cpu" and dtype == "bfloat16" else None


def cast_for_autocast(graph: torch.nn.Module) -> torch.nn.Module:
    """Cast each `Linear`'s weight and bias to bf16 once, as CPU autocast casts them on every call (its
    cast cache lasts one autocast block): the same products, bit for bit, without the per-call cast
    (all-MiniLM-L6-v2: one short query 10.0 → 5.4 ms, 32 × 60 tokens 89 → 73 ms). The graph then
    runs only under autocast; LayerNorm, embeddings, pooling and normalisation keep fp32."""
    for module in graph.modules():
        if isinstance(module, torch.nn.Linear):
            module.weight.data = module.weight.data.to(torch.bfloat16)
            if module.bias is not None:
                module.bias.data = module.bias.data.to(torch.bfloat16)
    return graph


class TorchSession:
    def __init__(
        self,
        graph: torch.nn.Module,
        inputs: tuple[str, ...],
        outputs: tuple[str, ...],
        device: str,
        autocast: torch.dtype | None = None,
    ) -> None:
        self.graph = graph
        self.inputs = inputs
        self.outputs = outputs
        self.device = torch.device(device)
        self.autocast = autocast

    @classmethod
    def load(cls, version_dir: Path, params: TorchGraphParams, device: str, threads: int = 0) -> TorchSession:
        from graphs import served_graph  # the graphs package, copied beside runtime/

        if device == "cpu" and threads > 0:
            torch.set_num_threads(threads)
        if torch.device(device).index is not None:  # "cuda:1"; a bare "cuda" is the current device
            torch.cuda.set_device(torch.device(device))
        autocast = cpu_autocast(params.dtype, device)
        graph = served_graph(version_dir, params, device)
        return cls(cast_for_autocast(graph) if autocast else graph, params.inputs, params.outputs, device, autocast)

    def run(self, output_names: list[str] | None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        missing = [name for name in self.inputs if name not in feed]
        if missing:
            raise KeyError(f"the graph takes {', '.join(self.inputs)}; missing {', '.join(missing)}")
        with torch.inference_mode(), torch.autocast("cpu", self.autocast, enabled=self.autocast is not None):
            args = [torch.from_numpy(np.ascontiguousarray(feed[name])).to(self.device) for name in self.inputs]
            out = self.graph(*args)
            named = dict(zip(self.outputs, out if isinstance(out, tuple) else (out,), strict=True))
            wanted = [named[name] for name in (output_names or self.outputs)]
            return [(t.float() if t.is_floating_point() else t).cpu().numpy() for t in wanted]

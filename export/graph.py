"""A tower's graph exported to ONNX, and the fatal check of an engine against it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tritonclient.grpc import model_config_pb2 as mc

from export.configs import Tensor
from export.errors import ValidationError


def export_onnx(
    graph: torch.nn.Module,
    path: Path,
    samples: dict[str, torch.Tensor],
    dynamic: dict[str, dict[int, object]],
    external_data: bool,
    output_names: tuple[str, ...],
) -> None:
    """Export `graph(**samples)` with the given dynamic axes (torch's dynamo exporter)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        graph.eval(),
        tuple(samples.values()),
        str(path),
        dynamo=True,
        input_names=list(samples),
        output_names=list(output_names),
        dynamic_shapes=dynamic,
        external_data=external_data,
        verbose=False,
    )


def torch_outputs(
    graph: torch.nn.Module, names: tuple[str, ...], feeds: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The graph's outputs on `feeds` by name, computed where its weights are (the CPU, or a GPU for `torch --gpu`)."""
    device = next(graph.parameters()).device
    with torch.inference_mode():
        out = graph(*(torch.from_numpy(x).to(device) for x in feeds.values()))
    values = out if isinstance(out, tuple) else (out,)
    return {n: v.float().cpu().numpy() for n, v in zip(names, values, strict=True)}


ONNX_TO_TRITON = {1: mc.TYPE_FP32, 7: mc.TYPE_INT64, 10: mc.TYPE_FP16, 16: mc.TYPE_BF16}


def graph_io(onnx_path: Path) -> tuple[list[Tensor], list[Tensor]]:
    """An exported graph's inputs and outputs (-1 for dynamic axes), read without loading external weights."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph

    def tensors(values) -> list[Tensor]:
        out = []
        for v in values:
            elem = v.type.tensor_type.elem_type
            if elem not in ONNX_TO_TRITON:
                raise ValidationError(f"{onnx_path}: {v.name} has ONNX element type {elem}, which is not served")
            dims = tuple(d.dim_value if d.dim_value > 0 else -1 for d in v.type.tensor_type.shape.dim)
            out.append(Tensor(v.name, ONNX_TO_TRITON[elem], dims))
        return out

    return tensors(graph.input), tensors(graph.output)

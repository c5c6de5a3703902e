"""The exported graph: backbone + pooling + L2 normalisation, and its fatal check."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tritonclient.grpc import model_config_pb2 as mc

from contract import EMBEDDING
from export.configs import Tensor
from export.errors import ValidationError
from export.pooling import pool
from export.request import GraphSettings, PoolingMode

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = EMBEDDING


class EmbeddingGraph(torch.nn.Module):
    """`(input_ids, attention_mask) → EMBEDDING [batch, dim]`: only pooled vectors leave."""

    def __init__(self, backbone: torch.nn.Module, pooling: PoolingMode, normalize: bool) -> None:
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.normalize = normalize
        self.zero_token_types = "token_type_ids" in inspect.signature(backbone.forward).parameters

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        extra = {"token_type_ids": torch.zeros_like(input_ids)} if self.zero_token_types else {}
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        pooled = pool(hidden.float(), attention_mask, self.pooling)  # pooled in fp32 whatever the weights
        return torch.nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled


def pooled(model: torch.nn.Module, settings: GraphSettings) -> EmbeddingGraph:
    """The text graph of every family that pools the backbone's hidden states itself."""
    return EmbeddingGraph(model, settings.pooling, settings.normalize)


def export_onnx(
    graph: torch.nn.Module,
    path: Path,
    samples: dict[str, torch.Tensor],
    dynamic: dict[str, dict[int, object]],
    external_data: bool,
    output_name: str = OUTPUT_NAME,
) -> None:
    """Export `graph(**samples)` with the given dynamic axes (torch's dynamo exporter)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        graph.eval(),
        tuple(samples.values()),
        str(path),
        dynamo=True,
        input_names=list(samples),
        output_names=[output_name],
        dynamic_shapes=dynamic,
        external_data=external_data,
        verbose=False,
    )


@dataclass(frozen=True)
class Agreement:
    """How closely an engine matched the reference on the validation batch."""

    max_abs_error: float
    min_cosine: float


def agreement(reference: np.ndarray, candidate: np.ndarray) -> Agreement:
    """How closely `candidate` matches `reference`, row by row (its shape must be the same)."""
    if reference.shape != candidate.shape:
        raise ValidationError(f"shape {candidate.shape} differs from the reference {reference.shape}")
    err = float(np.abs(reference - candidate).max())
    cos = 1.0  # a score (one column) has no direction: only its error counts
    if reference.shape[1] > 1:
        ref = reference / np.linalg.norm(reference, axis=1, keepdims=True)
        cand = candidate / np.linalg.norm(candidate, axis=1, keepdims=True)
        cos = float((ref * cand).sum(axis=1).min())
    return Agreement(err, cos)


def within(a: Agreement, atol: float, min_cosine: float) -> bool:
    return bool(np.isfinite(a.max_abs_error)) and a.max_abs_error <= atol and a.min_cosine >= min_cosine


def compare(reference: np.ndarray, candidate: np.ndarray, atol: float, min_cosine: float) -> Agreement:
    """Raise `ValidationError` unless every row agrees within tolerance."""
    found = agreement(reference, candidate)
    err, cos = found.max_abs_error, found.min_cosine
    if not within(found, atol, min_cosine):
        raise ValidationError(
            f"engine disagrees with PyTorch: max |error| {err:.3g} (limit {atol:g}), "
            f"min cosine {cos:.7f} (limit {min_cosine})"
        )
    return found


def torch_reference(graph: torch.nn.Module, *inputs: np.ndarray) -> np.ndarray:
    """The graph's output on `inputs`, computed where its weights are (the CPU, or a GPU for `torch --gpu`)."""
    device = next(graph.parameters()).device
    with torch.inference_mode():
        return graph(*(torch.from_numpy(x).to(device) for x in inputs)).float().cpu().numpy()


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

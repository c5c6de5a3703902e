"""The exported graph: backbone + pooling + L2 normalisation, and its fatal check."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from export.errors import ValidationError
from export.pooling import PoolingMode, pool

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "EMBEDDING"


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
        pooled = pool(hidden, attention_mask, self.pooling).float()  # EMBEDDING is FP32 whatever the weights
        return torch.nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled


class ClipTextGraph(torch.nn.Module):
    """CLIPModel text tower: EOS-position pooling, `text_projection`, L2 (as `get_text_features`, normalised)."""

    def __init__(self, clip: torch.nn.Module) -> None:
        super().__init__()
        self.text_model, self.projection = clip.text_model, clip.text_projection

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = self.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return torch.nn.functional.normalize(self.projection(pooled).float(), dim=-1)


class ClipImageGraph(torch.nn.Module):
    """CLIPModel vision tower: CLS after `post_layernorm`, `visual_projection`, L2."""

    def __init__(self, clip: torch.nn.Module) -> None:
        super().__init__()
        self.vision_model, self.projection = clip.vision_model, clip.visual_projection

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pooled = self.vision_model(pixel_values=pixel_values).pooler_output
        return torch.nn.functional.normalize(self.projection(pooled).float(), dim=-1)


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


def text_samples(max_length: int) -> tuple[dict[str, torch.Tensor], dict[str, dict[int, object]]]:
    """Sample ids/mask and their dynamic batch and sequence axes."""
    sample = torch.ones((2, min(16, max_length)), dtype=torch.int64)
    batch = torch.export.Dim("batch", max=4096)
    seq = torch.export.Dim("seq", max=max_length)
    return {"input_ids": sample, "attention_mask": sample.clone()}, {
        "input_ids": {0: batch, 1: seq},
        "attention_mask": {0: batch, 1: seq},
    }


def image_samples(height: int, width: int) -> tuple[dict[str, torch.Tensor], dict[str, dict[int, object]]]:
    """Sample pixels and their dynamic batch axis (the image size is fixed by the tower)."""
    return {"pixel_values": torch.zeros((2, 3, height, width))}, {
        "pixel_values": {0: torch.export.Dim("batch", max=4096)}
    }


@dataclass(frozen=True)
class Agreement:
    """How closely an engine matched the reference on the validation batch."""

    max_abs_error: float
    min_cosine: float


def compare(reference: np.ndarray, candidate: np.ndarray, atol: float, min_cosine: float) -> Agreement:
    """Raise `ValidationError` unless every row agrees within tolerance."""
    if reference.shape != candidate.shape:
        raise ValidationError(f"shape {candidate.shape} differs from the reference {reference.shape}")
    err = float(np.abs(reference - candidate).max())
    ref = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    cand = candidate / np.linalg.norm(candidate, axis=1, keepdims=True)
    cos = float((ref * cand).sum(axis=1).min())
    if not np.isfinite(err) or err > atol or cos < min_cosine:
        raise ValidationError(
            f"engine disagrees with PyTorch: max |error| {err:.3g} (limit {atol:g}), "
            f"min cosine {cos:.7f} (limit {min_cosine})"
        )
    return Agreement(err, cos)


def torch_reference(graph: torch.nn.Module, *inputs: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return graph(*(torch.from_numpy(x) for x in inputs)).float().numpy()

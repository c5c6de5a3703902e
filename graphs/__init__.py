"""The towers' PyTorch graphs: a backbone from a checkpoint folder and the task's head over it. The export
traces them to ONNX; the `torch` target's host (runtime/torch_session.py) builds and runs the same graph
from the weights beside it, so the served graph is the exported graph.

A package of its own beside the contract: it imports torch, transformers and the contract's settings
only, never the export or the runtime, and the `torch` host carries a copy of it. A graph is named
by its builder's import path (`graphs.dense:pooled`), which the host's config records.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graphs.settings import Attention, Dtype, GraphSettings

if TYPE_CHECKING:
    import torch

    from contract import TorchGraphParams

GraphBuilder = Callable[[Any, GraphSettings], "torch.nn.Module"]  # (transformers model, settings) → graph


def builder_path(builder: GraphBuilder) -> str:
    """`module:qualname` of a builder in this package, the name a `torch` host's config records."""
    path = f"{builder.__module__}:{builder.__qualname__}"
    if not path.startswith(f"{__name__}."):
        raise ValueError(f"{path}: a served graph's builder must live in the {__name__} package")
    return path


def builder_at(path: str) -> GraphBuilder:
    """The builder `builder_path` named; only this package's modules are imported."""
    module, _, name = path.partition(":")
    if not module.startswith(f"{__name__}.") or not name or "." in name:
        raise ValueError(f"{path!r} names no graph builder of the {__name__} package")
    return getattr(importlib.import_module(module), name)


def load_model(directory: Path, auto_class: str, decoder: bool, attention: Attention, dtype: Dtype) -> Any:
    """The transformers model in `directory`, in `dtype`, on the CPU, in eval mode."""
    import torch
    import transformers

    model = getattr(transformers, auto_class).from_pretrained(str(directory), dtype=getattr(torch, dtype)).eval()
    if decoder:
        # transformers ≥ 5.2 builds a bidirectional mask for decoders when is_causal is False.
        model.config.is_causal = attention == "causal"
    return model


def served_graph(version_dir: Path, params: TorchGraphParams, device: str) -> torch.nn.Module:
    """The `torch` target host's graph: its tower, from the weights beside `model.py`, on `device`; on the
    CPU with fp32 weights whatever `params.dtype` (a bf16 graph there runs under autocast)."""
    settings = GraphSettings(
        params.pooling,  # type: ignore[arg-type]
        params.normalize,
        None if params.image_token_id < 0 else params.image_token_id,
        tuple(params.score_tokens) or None,  # type: ignore[arg-type]
        tuple(params.dropped_ids),
    )
    dtype = "float32" if device == "cpu" else params.dtype
    model = load_model(version_dir / params.checkpoint, params.auto_class, params.decoder, params.attention, dtype)  # type: ignore[arg-type]
    return builder_at(params.graph)(model, settings).eval().to(device)

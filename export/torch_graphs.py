"""A family's tower graphs built from a checkpoint folder, in PyTorch: what the export traces to ONNX,
and what the `torch` target's host runs (runtime/torch_session.py). One function builds both, so the
served graph is the exported graph: the same backbone, attention mode, pooling, score head and
normalisation.
"""

from __future__ import annotations

from pathlib import Path

import torch

from contract import TorchGraphParams
from export.families import families
from export.families.base import Family
from export.request import Attention, Dtype, GraphSettings


def load_graphs(
    directory: Path,
    family: Family,
    settings: GraphSettings,
    attention: Attention,
    dtype: Dtype,
    towers: tuple[str, ...] | None = None,
) -> dict[str, torch.nn.Module]:
    """The named towers' graphs (default: all) from the weights in `directory`, in `dtype`, on the CPU.

    Only the graphs keep the model's modules: a tower that uses part of the model (GME's vision
    tower) lets the rest go when the caller drops the model."""
    import transformers

    auto = getattr(transformers, family.auto_class)
    model = auto.from_pretrained(str(directory), dtype=getattr(torch, dtype)).eval()
    if family.decoder:
        # transformers ≥ 5.2 builds a bidirectional mask for decoders when is_causal is False.
        model.config.is_causal = attention == "causal"
    wanted = towers or tuple(t.name for t in family.towers)
    return {t.name: t.graph(model, settings).eval() for t in family.towers if t.name in wanted}


def family_named(name: str) -> Family:
    for family in families():
        if family.name == name:
            return family
    raise ValueError(f"no family named {name!r}; known: {', '.join(f.name for f in families())}")


def served_graph(version_dir: Path, params: TorchGraphParams, device: str) -> torch.nn.Module:
    """The `torch` target host's graph: its tower, from the weights beside `model.py`, on `device`; on the
    CPU with fp32 weights whatever `params.dtype` (a bf16 graph there runs under autocast)."""
    settings = GraphSettings(
        params.pooling,  # type: ignore[arg-type]
        params.normalize,
        None if params.image_token_id < 0 else params.image_token_id,
        tuple(params.score_tokens) or None,  # type: ignore[arg-type]
    )
    graphs = load_graphs(
        version_dir / params.checkpoint,
        family_named(params.family),
        settings,
        params.attention,  # type: ignore[arg-type]
        "float32" if device == "cpu" else params.dtype,  # type: ignore[arg-type]
        (params.tower,),
    )
    return graphs[params.tower].to(device)

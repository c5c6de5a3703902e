"""A family's tower graphs (graphs/) from a checkpoint folder: what the export traces, validates and times."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from graphs import load_model
from graphs.settings import Attention, Dtype, GraphSettings

if TYPE_CHECKING:
    import torch

    from export.families.base import Family


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
    model = load_model(directory, family.auto_class, family.decoder, attention, dtype)
    wanted = towers or tuple(t.name for t in family.towers)
    return {t.name: t.graph(model, settings).eval() for t in family.towers if t.name in wanted}

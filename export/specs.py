"""One declarative spec per model family, selected by `config.model_type`.

Adding a family means adding a spec here (and, where its graph differs, a graph
builder in `export/graph.py`), never copying a module.
"""

from __future__ import annotations

from dataclasses import dataclass

from export.errors import ExportError
from export.pooling import PoolingMode


@dataclass(frozen=True)
class FamilySpec:
    """What differs between model families; the export mechanism is shared."""

    family: str
    model_types: tuple[str, ...]
    default_pooling: PoolingMode  # when the checkpoint carries no sentence-transformers modules
    default_normalize: bool
    default_max_length: int | None = None  # None: take the checkpoint's limit
    atol: float = 1e-4  # max |onnx - torch| per embedding component
    min_cosine: float = 0.99999


ENCODER = FamilySpec(
    family="encoder",
    model_types=("bert", "roberta", "xlm-roberta", "mpnet", "distilbert", "electra"),
    default_pooling="mean",
    default_normalize=True,
)

FAMILIES: tuple[FamilySpec, ...] = (ENCODER,)


def spec_for(model_type: str) -> FamilySpec:
    """The family spec serving `model_type`, or an error listing what is supported."""
    for spec in FAMILIES:
        if model_type in spec.model_types:
            return spec
    supported = ", ".join(t for s in FAMILIES for t in s.model_types)
    raise ExportError(f"model_type {model_type!r} is not supported; supported: {supported}")

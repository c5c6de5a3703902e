"""A task's head as the export sees it: the outputs a tower's graph returns (names and shapes), and how an
engine's outputs are held against PyTorch's. The graph wrapper itself is in graphs/ (the `torch` host
builds it too); a tower is built with a graph builder and the head it returns.

A new kind of output is a head here, a builder in graphs/ and a task in the contract's table: the
export, the configs, the validation and the hosts follow the head's outputs by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from contract import EMBEDDING, IMAGE_EMBEDS, SCORE, SPARSE_IDS, SPARSE_WEIGHTS
from export.configs import Tensor
from export.errors import ValidationError

if TYPE_CHECKING:
    from export.checkpoint import Plan

Outputs = dict[str, np.ndarray]  # a batch's outputs by name


@dataclass(frozen=True)
class Agreement:
    """How closely an engine matched the reference on the validation batch."""

    max_abs_error: float
    min_cosine: float


def within(a: Agreement, atol: float, min_cosine: float) -> bool:
    return bool(np.isfinite(a.max_abs_error)) and a.max_abs_error <= atol and a.min_cosine >= min_cosine


def check(found: Agreement, atol: float, min_cosine: float) -> Agreement:
    """`found`, or a `ValidationError` unless it is within tolerance."""
    if not within(found, atol, min_cosine):
        raise ValidationError(
            f"engine disagrees with PyTorch: max |error| {found.max_abs_error:.3g} (limit {atol:g}), "
            f"min cosine {found.min_cosine:.7f} (limit {min_cosine})"
        )
    return found


@dataclass(frozen=True)
class HeadOutput:
    """One output of a graph, per row: an optional token axis, then a width ("dimension": the card's; 0: none)."""

    name: str
    width: int | str = "dimension"
    per_token: bool = False  # one value or vector per token position (zero at padded positions)
    directed: bool = True  # a vector, held to a cosine as well as to an error (a score: its error only)
    dtype: int = mc.TYPE_FP32  # TYPE_INT64 for ids
    compact: bool = False  # vocabulary-wide: served as its non-zero entries, SPARSE_IDS and SPARSE_WEIGHTS

    def dims(self, p: Plan) -> tuple[int, ...]:
        width = p.dimension if self.width == "dimension" else int(self.width)
        return (*((-1,) if self.per_token else ()), *((width,) if width else ()))

    def agreement(self, reference: np.ndarray, candidate: np.ndarray) -> Agreement:
        """Error over every value; cosine over the vectors the reference holds (a token axis flattened,
        padded positions, all zero, left out)."""
        if reference.shape != candidate.shape:
            raise ValidationError(f"{self.name}: shape {candidate.shape} differs from the reference {reference.shape}")
        err = float(np.abs(reference - candidate).max()) if reference.size else 0.0
        if not self.directed or reference.ndim < 2 or reference.shape[-1] < 2:
            return Agreement(err, 1.0)
        ref, cand = reference.reshape(-1, reference.shape[-1]), candidate.reshape(-1, candidate.shape[-1])
        held = np.linalg.norm(ref, axis=1) > 0
        ref, cand = ref[held], cand[held]
        if not len(ref):
            return Agreement(err, 1.0)
        ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
        cand = cand / np.maximum(np.linalg.norm(cand, axis=1, keepdims=True), 1e-30)
        return Agreement(err, float((ref * cand).sum(axis=1).min()))


@dataclass(frozen=True)
class Head:
    """The outputs of a tower's graph, in the order the graph returns them."""

    name: str
    outputs: tuple[HeadOutput, ...]
    tasks: tuple[str, ...] = ()  # the tasks (the contract's table) whose outputs it returns

    @property
    def names(self) -> tuple[str, ...]:
        """The graph's outputs."""
        return tuple(o.name for o in self.outputs)

    @property
    def sparse_source(self) -> str:
        """The vocabulary-wide output its engine's host compacts ("": none)."""
        return next((o.name for o in self.outputs if o.compact), "")

    def served(self, p: Plan) -> list[Tensor]:
        """Each output per row, as the engine model and the ensemble state it (no batch axis); a compact
        one as its entries."""
        out = []
        for o in self.outputs:
            if o.compact:
                out += [Tensor(SPARSE_IDS, mc.TYPE_INT64, (-1,)), Tensor(SPARSE_WEIGHTS, mc.TYPE_FP32, (-1,))]
            else:
                out.append(Tensor(o.name, o.dtype, o.dims(p)))
        return out

    def engine(self, p: Plan) -> list[Tensor]:
        """Each output of the exported graph, batch axis first."""
        return [Tensor(o.name, o.dtype, (-1, *o.dims(p))) for o in self.outputs]

    def agreement(self, reference: Outputs, candidate: Outputs) -> Agreement:
        """The worst agreement over the outputs (the largest error, the lowest cosine)."""
        found = [o.agreement(reference[o.name], candidate[o.name]) for o in self.outputs]
        return Agreement(max(a.max_abs_error for a in found), min(a.min_cosine for a in found))


DENSE = Head("dense", (HeadOutput(EMBEDDING),), ("embed",))  # one pooled vector a row
SCORED = Head("score", (HeadOutput(SCORE, 1, directed=False),), ("rerank",))  # one raw score a row
IMAGE_FEATURES = Head("image features", (HeadOutput(IMAGE_EMBEDS),))  # features scattered into a text encoder

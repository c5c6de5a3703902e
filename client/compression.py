"""Compressed embeddings, one definition for every route that returns them (`/v1/embeddings`'
`embedding_type`, NIM's name; Cohere's `embedding_types` on `/v2/embed`): the response shaping of
sentence-transformers' `quantize_embeddings`, applied after `dimensions` truncation and re-normalisation.

- `binary` / `ubinary`: one bit per dimension (`x > 0`), packed eight to a byte, most significant bit
  first (`np.packbits`), as int8 offset by −128 or as uint8: dimensions / 8 values a vector.
- `int8` / `uint8`: each dimension cut into 256 steps between the minimum and maximum the export
  calibrated (the card's `int8_ranges`, at the full dimension), `floor((x − min) / step)` clipped to
  0…255, as int8 offset by −128 or as uint8.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from client.errors import bad_request
from client.triton import ServedModel

EmbeddingType = Literal["float", "int8", "uint8", "binary", "ubinary"]
EMBEDDING_TYPES: tuple[str, ...] = ("float", "int8", "uint8", "binary", "ubinary")


def check_compression(model: ServedModel, kind: str, dimension: int, param: str) -> None:
    """int8 and uint8 need the card's calibration at the full dimension; binary and float take any."""
    if not kind.endswith("int8"):
        return
    ranges = model.card.int8_ranges
    if not ranges:
        raise bad_request(
            f"model {model.name!r} has no int8 calibration (re-export it to add one); ask for float or binary",
            param,
        )
    if dimension != len(ranges) // 2:
        raise bad_request(
            f"{kind} is calibrated for the full {len(ranges) // 2} dimensions of {model.name!r}; ask for those, "
            "or for float or binary at a reduced size",
            param,
        )


def compress(vectors: np.ndarray, kind: str, model: ServedModel) -> np.ndarray:
    """`vectors` (float32 `[n, d]`, already cut and re-normalised) as `kind` (checked by `check_compression`)."""
    if kind == "float":
        return vectors
    if kind.endswith("binary"):
        packed = np.packbits(vectors > 0, axis=-1)
        return (packed.astype(np.int16) - 128).astype(np.int8) if kind == "binary" else packed
    ranges = np.asarray(model.card.int8_ranges, dtype=np.float32).reshape(2, -1)
    starts = ranges[0]
    steps = (ranges[1] - starts) / 255
    steps = np.where(steps == 0, 1, steps)
    levels = np.clip(np.floor((vectors - starts) / steps), 0, 255)
    return (levels - 128).astype(np.int8) if kind == "int8" else levels.astype(np.uint8)

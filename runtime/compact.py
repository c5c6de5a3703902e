"""A vocabulary-wide output as its non-zero entries: what crosses Triton's wire for a sparse head whose
graph returns one weight per vocabulary id (SPLADE: 30,522 floats, 122 KB a row, mostly zero)."""

from __future__ import annotations

import numpy as np


def nonzero_entries(dense: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`[rows, vocabulary]` → ids `[rows, k]` (int64) and weights `[rows, k]` (float32): each row's non-zero
    entries in id order, padded with (0, 0.0) to the largest count k of the rows (at least 1)."""
    held = dense != 0
    counts = held.sum(axis=1)
    k = max(int(counts.max()) if len(counts) else 0, 1)
    ids = np.zeros((dense.shape[0], k), dtype=np.int64)
    weights = np.zeros((dense.shape[0], k), dtype=np.float32)
    for row, n in enumerate(counts):
        where = np.flatnonzero(held[row])
        ids[row, :n] = where
        weights[row, :n] = dense[row, where]
    return ids, weights

"""The two halves of a sparse row's trip: the host's compaction of a vocabulary-wide vector
(runtime/compact.py) and the adapter's merge of entries into TEI's `{index, value}` (client/token_outputs.py)."""

from __future__ import annotations

import numpy as np

from client.token_outputs import sparse_rows
from runtime.compact import nonzero_entries


def test_compaction_keeps_every_nonzero_entry_in_id_order() -> None:
    dense = np.zeros((3, 10), dtype=np.float32)
    dense[0, [7, 2, 9]] = [0.5, 1.5, 0.25]
    dense[2, 4] = 3.0
    ids, weights = nonzero_entries(dense)
    assert ids.shape == weights.shape == (3, 3) and ids.dtype == np.int64  # padded to the largest count
    assert ids[0].tolist() == [2, 7, 9] and weights[0].tolist() == [1.5, 0.5, 0.25]
    assert weights[1].tolist() == [0, 0, 0] and (ids[2, 0], weights[2, 0]) == (4, 3.0)
    assert nonzero_entries(np.zeros((2, 5), dtype=np.float32))[0].shape == (2, 1)  # no entry: one empty slot


def test_entries_merge_as_flagembedding_merges_token_weights() -> None:
    """A repeated id keeps its largest weight, weights ≤ 0 (specials, padding) are no entry, ids ascend."""
    ids = np.array([[5, 3, 5, 0, 9], [1, 1, 0, 0, 0]])
    weights = np.array([[0.2, 0.7, 0.9, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    rows = sparse_rows(ids, weights)
    assert rows[0] == [{"index": 3, "value": np.float32(0.7).item()}, {"index": 5, "value": np.float32(0.9).item()}]
    assert rows[1] == []
    round_trip = sparse_rows(*nonzero_entries(np.array([[0, 0.5, 0, 2.0]], dtype=np.float32)))
    assert round_trip == [[{"index": 1, "value": 0.5}, {"index": 3, "value": 2.0}]]

"""Run an exported encoder graph with ONNX Runtime over several requests at once."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort


def open_session(path: str, intra_op_threads: int = 0) -> ort.InferenceSession:
    """A CPU session; 0 threads lets ONNX Runtime pick one per core."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class Packing:
    """How rows of many requests are regrouped into engine calls."""

    max_rows: int = 32
    max_tokens: int = 16384  # rows × padded width of one call


def micro_batches(lengths: np.ndarray, packing: Packing) -> list[np.ndarray]:
    """Row indices sorted by length, cut so each group's padded size stays within the packing limits."""
    order = np.argsort(lengths, kind="stable")
    groups: list[np.ndarray] = []
    start = 0
    for end in range(1, len(order) + 1):
        rows = end - start
        if end < len(order) and rows < packing.max_rows and (rows + 1) * int(lengths[order[end]]) <= packing.max_tokens:
            continue
        groups.append(order[start:end])
        start = end
    return groups


def run_packed(
    session: ort.InferenceSession, feeds: list[dict[str, np.ndarray]], output: str, packing: Packing | None = None
) -> list[np.ndarray]:
    """Embed the rows of all requests in length-sorted micro-batches trimmed to their real length.

    Each request arrives right-padded to its own bucket; pooling ignores padding, so
    regrouping rows across requests by length only removes wasted compute. The
    results are scattered back to their requests in order.
    """
    packing = packing or Packing()
    ids = [f["input_ids"] for f in feeds]
    masks = [f["attention_mask"] for f in feeds]
    sizes = [a.shape[0] for a in ids]
    lengths = np.concatenate([m.sum(axis=1) for m in masks]).astype(np.int64)
    width = max(a.shape[1] for a in ids)
    all_ids = np.concatenate([np.pad(a, ((0, 0), (0, width - a.shape[1]))) for a in ids])
    all_mask = np.concatenate([np.pad(m, ((0, 0), (0, width - m.shape[1]))) for m in masks])
    out: np.ndarray | None = None
    for group in micro_batches(lengths, packing):
        w = max(int(lengths[group].max()), 1)
        emb = session.run([output], {"input_ids": all_ids[group, :w], "attention_mask": all_mask[group, :w]})[0]
        if out is None:
            out = np.empty((len(lengths), emb.shape[1]), dtype=emb.dtype)
        out[group] = emb
    assert out is not None
    bounds = np.cumsum([0, *sizes])
    return [out[bounds[i] : bounds[i + 1]] for i in range(len(feeds))]


def run_concatenated(
    session: ort.InferenceSession, feeds: list[dict[str, np.ndarray]], output: str
) -> list[np.ndarray]:
    """Fixed-shape inputs (images): one engine call over all requests, split back in order."""
    joined = {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}
    out = session.run([output], joined)[0]
    bounds = np.cumsum([0, *(next(iter(f.values())).shape[0] for f in feeds)])
    return [out[bounds[i] : bounds[i + 1]] for i in range(len(feeds))]

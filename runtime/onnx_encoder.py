"""Run an exported encoder graph with ONNX Runtime over several requests at once."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort


def open_session(path: str, intra_op_threads: int = 0) -> ort.InferenceSession:
    """A CPU session; 0 threads lets ONNX Runtime pick one per core."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def run_grouped(
    session: ort.InferenceSession, feeds: list[dict[str, np.ndarray]], output: str
) -> list[np.ndarray]:
    """Concatenate requests of equal shape, run each group once, split the rows back.

    Triton's dynamic batcher hands a Python model a list of requests; requests
    with the same padded length become one engine call.
    """
    results: list[np.ndarray | None] = [None] * len(feeds)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, feed in enumerate(feeds):
        key = tuple(feed[name].shape[1] for name in sorted(feed))
        groups.setdefault(key, []).append(i)
    for members in groups.values():
        names = feeds[members[0]].keys()
        joined = {n: np.concatenate([feeds[i][n] for i in members]) for n in names}
        out = session.run([output], joined)[0]
        start = 0
        for i in members:
            rows = next(iter(feeds[i].values())).shape[0]
            results[i] = out[start : start + rows]
            start += rows
    return results  # type: ignore[return-value]

"""Run an exported encoder graph over several requests at once; each request gets its rows of every
output by name (`Outputs`), whatever outputs the graph has (a task's head decides them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import onnxruntime as ort

from contract import IMAGE_EMBEDS, EncoderHostParams

TOKEN_TYPES = "token_type_ids"
Outputs = dict[str, np.ndarray]  # a request's outputs by name, each with one row per input row


def open_session(path: str, intra_op_threads: int = 0, spinning: bool = True) -> ort.InferenceSession:
    """A CPU session; 0 threads lets ONNX Runtime pick one per core.

    Spinning keeps idle pool threads busy-waiting for the next parallel section: fastest
    when the process has the cores to itself, but inside a server it takes the cores
    the tokenizer, Triton and the adapter need, so the served encoder turns it off.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def open_onnx(path: str, runtime: str = "onnxruntime", dtype: str = "float32", threads: int = 0) -> Session:
    """The engine a host runs an exported ONNX graph with: ONNX Runtime (fp32, no spinning), or OpenVINO
    compiled for this CPU in `dtype` (runtime/openvino_session.py)."""
    if runtime == "openvino":
        from runtime.openvino_session import OpenVinoSession

        return OpenVinoSession(path, dtype, threads)
    if runtime != "onnxruntime" or dtype != "float32":
        raise ValueError(f"no ONNX engine {runtime} in {dtype}")
    return open_session(path, threads, spinning=False)


# Qwen2-VL patches packed into one vision-tower call, by where the engine runs. Packed images share one
# dense block-diagonal mask, so a call's attention grows with the square of its patches while the useful
# work grows with each image's own square. Measured with `python -m bench.gpu_graphs` on the real GME
# vision tower, 1,024-patch images (the smallest the authors' bounds allow): on 2 CPU cores (fp32) one
# per call 51 patches/s, two 46, four 38; on an H200 (bf16) one 69–81k, two 143k, four 123k, eight 90k,
# and one 4,096-patch image 123k. An image larger than the limit runs alone.
VISION_PATCHES_PER_CALL = {"cpu": 1024, "gpu": 4096}


class Session(Protocol):
    """What the packers need of an engine: an in-process ONNX Runtime session or `TritonEngine`."""

    def run(self, output_names: list[str] | None, feed: dict[str, np.ndarray]) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class Packing:
    """How rows of many requests are regrouped into engine calls."""

    max_rows: int = EncoderHostParams.max_rows
    max_tokens: int = EncoderHostParams.max_tokens  # rows × padded width of one call
    max_padding: float = EncoderHostParams.max_padding  # padded tokens allowed per real token of one call


def micro_batches(lengths: np.ndarray, packing: Packing) -> list[np.ndarray]:
    """Row indices sorted by length, cut so each group stays within the packing limits.

    A group ends at `max_rows`, at `max_tokens` padded tokens, or where the next (longer)
    row would pad the group beyond `max_padding` of its real tokens: a few rows of very
    different lengths run faster as separate calls than padded into one (measured with
    MiniLM on 2 cores: 6-row batches of 5–60 words, 92 → 126 rows/s at 0.25).
    """
    order = np.argsort(lengths, kind="stable")
    groups: list[np.ndarray] = []
    start, real = 0, 0
    for end in range(1, len(order) + 1):
        real += int(lengths[order[end - 1]])
        if end < len(order):
            rows, nxt = end - start, int(lengths[order[end]])
            padded = (rows + 1) * nxt
            if (
                rows < packing.max_rows
                and padded <= packing.max_tokens
                and padded <= (1 + packing.max_padding) * (real + nxt)
            ):
                continue
        groups.append(order[start:end])
        start, real = end, 0
    return groups


def run_packed(
    session: Session,
    feeds: list[dict[str, np.ndarray]],
    outputs: tuple[str, ...],
    packing: Packing | None = None,
    image_hidden: int | None = None,
    per_token: frozenset[str] = frozenset(),
) -> list[Outputs]:
    """Run the rows of all requests in length-sorted micro-batches trimmed to their real length.

    Each request arrives right-padded to its own bucket; pooling ignores padding, so
    regrouping rows across requests by length only removes wasted compute. Every output
    is scattered back to its requests in order; an output in `per_token` (`[rows, tokens, …]`:
    a value per position) is padded back with zeros to the request's own width. Rows may carry `token_type_ids`
    (a cross-encoder's pairs), regrouped with them. A request may carry
    `IMAGE_EMBEDS [1, M, H]` (GME: one row whose image pads take those features); the
    graph then gets each micro-batch's features in row order as `image_embeds [ΣM, H]`,
    `[0, image_hidden]` for a micro-batch without images (`image_hidden`: the graph takes features).
    """
    packing = packing or Packing()
    ids = [f["input_ids"] for f in feeds]
    masks = [f["attention_mask"] for f in feeds]
    sizes = [a.shape[0] for a in ids]
    lengths = np.concatenate([m.sum(axis=1) for m in masks]).astype(np.int64)
    width = max(a.shape[1] for a in ids)
    all_ids = np.concatenate([np.pad(a, ((0, 0), (0, width - a.shape[1]))) for a in ids])
    all_mask = np.concatenate([np.pad(m, ((0, 0), (0, width - m.shape[1]))) for m in masks])
    types = [f.get(TOKEN_TYPES) for f in feeds]  # a cross-encoder's pairs (BERT) carry token types
    all_types = None
    if all(t is not None for t in types):
        all_types = np.concatenate([np.pad(t, ((0, 0), (0, width - t.shape[1]))) for t in types])
    row_images: list[np.ndarray | None] = []
    for f, n in zip(feeds, sizes, strict=True):
        embeds = f.get(IMAGE_EMBEDS)
        row_images += [embeds[0]] if embeds is not None and n == 1 else [None] * n
    out: Outputs = {}
    for group in micro_batches(lengths, packing):
        w = max(int(lengths[group].max()), 1)
        feed = {"input_ids": all_ids[group, :w], "attention_mask": all_mask[group, :w]}
        if all_types is not None:
            feed[TOKEN_TYPES] = all_types[group, :w]
        if image_hidden is not None:
            parts = [row_images[r] for r in group if row_images[r] is not None]
            feed["image_embeds"] = np.concatenate(parts) if parts else np.zeros((0, image_hidden), dtype=np.float32)
        for name, rows in zip(outputs, session.run(list(outputs), feed), strict=True):
            if name not in out:
                shape = (len(lengths), width, *rows.shape[2:]) if name in per_token else (len(lengths), *rows.shape[1:])
                out[name] = np.zeros(shape, dtype=rows.dtype)
            if name in per_token:
                out[name][group, :w] = rows
            else:
                out[name][group] = rows
    bounds = np.cumsum([0, *sizes])
    return [_rows_of(out, bounds[i], bounds[i + 1], ids[i].shape[1], per_token) for i in range(len(feeds))]


def _rows_of(out: Outputs, start: int, end: int, width: int, per_token: frozenset[str]) -> Outputs:
    """One request's rows of each output (a per-token one at the request's own width)."""
    return {name: rows[start:end, :width] if name in per_token else rows[start:end] for name, rows in out.items()}


def run_vision_packed(
    session: Session, feeds: list[dict[str, np.ndarray]], outputs: tuple[str, ...], max_patches: int
) -> list[Outputs]:
    """Qwen2-VL vision tower over many images: pack requests (one image each) up to `max_patches` per call.

    Attention is block-diagonal by image (the `segment_ids` of each request are set to its
    place in the call), so packing never mixes images. Each image of N patches yields N/4
    features (2×2 merge), returned as `[1, N/4, H]` (the tower's one output).
    """
    (output,) = outputs
    counts = [f["pixel_values"].shape[1] for f in feeds]
    results: list[Outputs | None] = [None] * len(feeds)
    start = 0
    while start < len(feeds):
        end, total = start + 1, counts[start]
        while end < len(feeds) and total + counts[end] <= max_patches:
            total += counts[end]
            end += 1
        members = range(start, end)
        feed = {
            "pixel_values": np.concatenate([feeds[i]["pixel_values"][0] for i in members]),
            "position_ids": np.concatenate([feeds[i]["position_ids"][0] for i in members]),
            "segment_ids": np.concatenate([np.full(counts[i], k, dtype=np.int64) for k, i in enumerate(members)]),
        }
        merged = session.run([output], feed)[0]
        offset = 0
        for i in members:
            n = counts[i] // 4
            results[i] = {output: merged[offset : offset + n][None]}
            offset += n
        start = end
    return results  # type: ignore[return-value]


def run_concatenated(session: Session, feeds: list[dict[str, np.ndarray]], outputs: tuple[str, ...]) -> list[Outputs]:
    """Fixed-shape inputs (images): one engine call over all requests, each output split back in order."""
    joined = {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}
    out = dict(zip(outputs, session.run(list(outputs), joined), strict=True))
    bounds = np.cumsum([0, *(next(iter(f.values())).shape[0] for f in feeds)])
    return [{name: rows[bounds[i] : bounds[i + 1]] for name, rows in out.items()} for i in range(len(feeds))]

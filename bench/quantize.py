"""`python -m bench.quantize`: the int8 frontier of the exported encoder: speed against fp32, and accuracy.

For the reduced-precision CPU engine of the performance issue: ship `--dtype int8` only where
a variant runs ≥ 1.8× the fp32 engine with a minimum cosine ≥ 0.995 to it. Quantises the
default model's exported graph several ways with ONNX Runtime's tools, runs each next to fp32
on the same length-sorted batches of 32 and prints the speed ratio and the cosine (min and
mean) over the validation texts:

- dynamic int8 (weights per channel, activations per call), all quantisable ops or MatMul only,
  with the 7-bit `reduce_range` meant for CPUs without VNNI and without it;
- the same with the MatMuls that hurt accuracy most kept in fp32, ranked by measured
  sensitivity (each weight MatMul quantised alone, the drop of the minimum cosine on
  calibration queries), and with the last transformer layer kept in fp32;
- static int8 QDQ, per-channel weights, activations calibrated on representative text.

The validation texts (2,048 mixed texts and 512 queries, seeded) are disjoint from the
calibration queries. Prints the CPU's model and flags: int8 speed depends on VNNI.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from bench import machine
from bench.runners import preprocessor
from bench.workloads import WORKLOADS
from export.build import Progress, export
from export.request import ExportRequest
from launcher import default_model
from runtime.text import encode, frame_all, pad

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "quantize"
SPEED_GOAL, COSINE_GOAL = 1.8, 0.995

Feeds = list[dict[str, np.ndarray]]


def batches(repo: Path, texts: list[str], size: int = 32, width: int | None = None) -> Feeds:
    """Length-sorted batches trimmed to their longest row, or all padded to `width` (histogram
    calibration needs one shape across batches)."""
    tok, layout = preprocessor(repo / "m_preprocess")
    rows = frame_all(encode(tok, texts), layout, "END")
    rows.sort(key=len)
    out = []
    for i in range(0, len(rows), size):
        b = pad(rows[i : i + size], layout)
        w = width or int(b.attention_mask.sum(axis=1).max())
        ids = np.pad(b.input_ids, ((0, 0), (0, max(w - b.input_ids.shape[1], 0))))[:, :w]
        mask = np.pad(b.attention_mask, ((0, 0), (0, max(w - b.attention_mask.shape[1], 0))))[:, :w]
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


class Calibration(CalibrationDataReader):
    def __init__(self, feeds: Feeds) -> None:
        self.feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def embed(s: ort.InferenceSession, feeds: Feeds) -> np.ndarray:
    return np.concatenate([s.run(None, f)[0] for f in feeds])


def timed(s: ort.InferenceSession, feeds: Feeds) -> float:
    start = time.perf_counter()
    embed(s, feeds)
    return time.perf_counter() - start


def min_cosine(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    return float(cos.min()), float(cos.mean())


def weight_matmuls(path: Path) -> list[str]:
    """Names of the MatMul nodes whose second input is a weight (what dynamic int8 quantises)."""
    model = onnx.load(str(path), load_external_data=False)
    weights = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weights]


def last_layer(nodes: list[str], layers: int) -> list[str]:
    """The weight MatMuls of the last transformer layer: the graph orders them layer by layer."""
    per_layer = len(nodes) // layers
    return nodes[-per_layer:] if per_layer else []


def sensitivity(prepared: Path, nodes: list[str], calibration: Feeds, reference: np.ndarray) -> list[str]:
    """`nodes` ranked by the min-cosine drop when each alone is quantised (dynamic, per channel), worst first."""
    drops = {}
    for i, node in enumerate(nodes):
        out = WORK / "sensitivity.onnx"
        quantize_dynamic(prepared, out, weight_type=QuantType.QInt8, per_channel=True, nodes_to_quantize=[node])
        drops[node] = 1 - min_cosine(reference, embed(session(out), calibration))[0]
        print(f"  sensitivity {i + 1}/{len(nodes)}: {node} {drops[node]:.5f}", flush=True)
    return sorted(nodes, key=drops.__getitem__, reverse=True)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.quantize", description=__doc__)
    ap.add_argument("--rounds", type=int, default=2, help="timed rounds per variant, fp32 and int8 interleaved")
    ap.add_argument("--only", default="", help="run the variants whose name contains this, e.g. 'static'")
    args = ap.parse_args()
    repo = WORK / "repository"
    if not (repo / "m" / "config.pbtxt").exists():
        export(ExportRequest(checkpoint=default_model.checkpoint(), repository=repo, name="m"), Progress())
    fp32 = repo / "m_encoder" / "1" / "model.onnx"
    prepared = WORK / "prepared.onnx"
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    validation = batches(repo, WORKLOADS["mixed-5-60"](2048)) + batches(repo, WORKLOADS["queries-5-20"](512))
    calibration_texts = WORKLOADS["documents-20-400"](32) + WORKLOADS["queries-5-20"](768)[512:]  # not validation
    calibration = batches(repo, calibration_texts, size=8)
    histogram_calibration = batches(repo, calibration_texts, size=8, width=128)
    base = session(fp32)
    reference, calibration_reference = embed(base, validation), embed(base, calibration)
    nodes = weight_matmuls(prepared)

    @functools.cache
    def ranked() -> list[str]:
        print(f"{len(nodes)} weight MatMuls; ranking them by sensitivity …", flush=True)
        return sensitivity(prepared, nodes, calibration, calibration_reference)

    def dynamic(out: Path, exclude: list[str] = (), ops: list[str] | None = None, reduce: bool = False) -> None:
        quantize_dynamic(
            prepared,
            out,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=reduce,
            op_types_to_quantize=ops,
            nodes_to_exclude=list(exclude),
        )

    def static(out: Path, method: CalibrationMethod, exclude: list[str] = ()) -> None:
        quantize_static(
            prepared,
            out,
            Calibration(calibration if method == CalibrationMethod.MinMax else histogram_calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=list(exclude),
            calibrate_method=method,
            extra_options={"CalibPercentile": 99.999} if method == CalibrationMethod.Percentile else {},
        )

    variants: dict[str, Callable[[Path], None]] = {
        "dynamic, all ops, reduce_range (7-bit)": lambda o: dynamic(o, reduce=True),
        "dynamic, all ops": lambda o: dynamic(o),
        "dynamic, MatMul only": lambda o: dynamic(o, ops=["MatMul"]),
        "dynamic, MatMul, last layer fp32": lambda o: dynamic(o, last_layer(nodes, 6), ["MatMul"]),
        **{
            f"dynamic, MatMul, {k} most sensitive fp32": (lambda o, k=k: dynamic(o, ranked()[:k], ["MatMul"]))
            for k in (1, 2, 4, 8, 12)
        },
        "static QDQ, MatMul, min-max calibrated": lambda o: static(o, CalibrationMethod.MinMax),
        "static QDQ, MatMul, percentile calibrated": lambda o: static(o, CalibrationMethod.Percentile),
        "static QDQ, MatMul, percentile, 4 most sensitive fp32": lambda o: static(
            o, CalibrationMethod.Percentile, ranked()[:4]
        ),
    }
    timed(base, validation[:4])
    print(f"\nint8 frontier, all-MiniLM-L6-v2; {machine.describe()}")
    n = sum(len(f["input_ids"]) for f in validation)
    print(f"validation: {n} texts; goal ≥ {SPEED_GOAL}× at min cos ≥ {COSINE_GOAL}")
    print(f"{'variant':54} {'× fp32':>7} {'cos min':>8} {'cos mean':>9}  goal")
    for i, (name, make) in enumerate(variants.items()):
        if args.only not in name:
            continue
        out = WORK / f"variant-{i}.onnx"
        make(out)
        candidate = session(out)
        low, mean = min_cosine(reference, embed(candidate, validation))
        t_fp32 = t_int8 = 0.0
        for _ in range(args.rounds):  # interleaved, against drift of a shared machine
            t_fp32 += timed(base, validation)
            t_int8 += timed(candidate, validation)
        speed = t_fp32 / t_int8
        met = "yes" if speed >= SPEED_GOAL and low >= COSINE_GOAL else "no"
        print(f"{name:54} {speed:7.2f} {low:8.4f} {mean:9.4f}  {met}", flush=True)


if __name__ == "__main__":
    main()

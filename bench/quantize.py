"""`python -m bench.quantize`: int8 ONNX Runtime variants of the exported encoder against fp32.

For the reduced-precision CPU engine of the performance issue (target: ≥ 1.8× the fp32
engine at cosine ≥ 0.995). Quantises the default model's exported graph several ways with
ONNX Runtime's tools, runs each next to fp32 on the same length-sorted batches, and prints
speed ratio and cosine (min and mean over the texts). Nothing here is served: a variant is
worth shipping only if it meets both targets on the machine that will serve it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from bench.runners import preprocessor
from bench.workloads import WORKLOADS
from export.build import ExportRequest, Progress, export
from launcher import default_model
from runtime.text import encode, frame_all, pad

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "quantize"


def batches(repo: Path, texts: list[str], size: int = 32) -> list[dict[str, np.ndarray]]:
    tok, layout = preprocessor(repo / "m_preprocess")
    rows = frame_all(encode(tok, texts), layout, "END")
    rows.sort(key=len)
    out = []
    for i in range(0, len(rows), size):
        b = pad(rows[i : i + size], layout)
        w = int(b.attention_mask.sum(axis=1).max())
        out.append({"input_ids": b.input_ids[:, :w], "attention_mask": b.attention_mask[:, :w]})
    return out


class Calibration(CalibrationDataReader):
    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def timed(s: ort.InferenceSession, feeds: list[dict[str, np.ndarray]]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    out = np.concatenate([s.run(None, f)[0] for f in feeds])
    return time.perf_counter() - start, out


def main() -> None:
    repo = WORK / "repository"
    if not (repo / "m" / "config.pbtxt").exists():
        export(ExportRequest(checkpoint=default_model.checkpoint(), repository=repo, name="m"), Progress())
    fp32 = repo / "m_encoder" / "1" / "model.onnx"
    prepared = WORK / "prepared.onnx"
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    feeds = batches(repo, WORKLOADS["mixed-5-60"](1024))
    calibration = batches(repo, WORKLOADS["queries-5-20"](128), size=1)
    variants: dict[str, Callable[[Path], None]] = {
        "dynamic int8, all ops, per channel": lambda out: quantize_dynamic(
            prepared, out, weight_type=QuantType.QInt8, per_channel=True, reduce_range=True
        ),
        "dynamic int8, MatMul only, per channel": lambda out: quantize_dynamic(
            prepared,
            out,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=True,
            op_types_to_quantize=["MatMul"],
        ),
        "static int8 QDQ (calibrated), MatMul": lambda out: quantize_static(
            prepared,
            out,
            Calibration(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=True,
            op_types_to_quantize=["MatMul"],
        ),
    }
    base = session(fp32)
    timed(base, feeds[:4])
    print(f"{'variant':42} {'× fp32':>7} {'cos min':>8} {'cos mean':>9}")
    for name, make in variants.items():
        out = WORK / f"{name.split(',')[0].replace(' ', '-')}-{len(name)}.onnx"
        make(out)
        candidate = session(out)
        timed(candidate, feeds[:4])
        t_fp32, ref = timed(base, feeds)
        t_int8, got = timed(candidate, feeds)
        t_fp32 = (t_fp32 + timed(base, feeds)[0]) / 2  # fp32 before and after, against drift
        cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
        print(f"{name:42} {t_fp32 / t_int8:7.2f} {cos.min():8.4f} {cos.mean():9.4f}", flush=True)


if __name__ == "__main__":
    main()

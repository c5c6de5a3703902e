"""`python -m bench.openvino_shapes`: what an OpenVINO call costs when its input shape changes.

The served `openvino` host runs the fp32 ONNX graph with dynamic shapes, one thread per instance,
and a served call's shape (rows × padded width) is almost never the one before it. This prints,
for the embedded all-MiniLM-L6-v2 on one thread (`--dtype`: the inference precision):

- the CPU ms of one call when every call has the same shape, when two widths alternate, and over
  a cycle of 41 widths: the difference is what a change of shape costs;
- the same for graphs compiled with static shapes (one compiled model per shape), the remedy
  OpenVINO's documentation names, and the private memory each compiled shape costs;
- calls of 1–4 rows of the mixed 5–60 word texts in arrival order (what a served execute at
  one text per request looks like), with dynamic shapes and with static shapes, widths rounded
  up to `--quantum` tokens.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bench import machine
from bench.runners import preprocessor
from bench.workloads import WORKLOADS
from launcher import default_model
from runtime.openvino_session import PRECISION_HINTS, compile_config
from runtime.text import encode, frame_all, pad

ROOT = Path(__file__).resolve().parent.parent


def private_mb() -> float:
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Private_Dirty:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Compiler:
    """The served host's OpenVINO settings on one thread, compiling the graph with dynamic or static shapes."""

    def __init__(self, onnx: Path, dtype: str) -> None:
        import openvino as ov

        self.ov, self.core = ov, ov.Core()
        self.model = self.core.read_model(str(onnx))
        self.config = compile_config(dtype, threads=1)
        self.static: dict[tuple[int, int], object] = {}

    def dynamic(self):
        return self.core.compile_model(self.model, "CPU", self.config).create_infer_request()

    def fixed(self, rows: int, width: int):
        """The infer request of a graph compiled for exactly `rows × width` (compiled once, kept)."""
        if (rows, width) not in self.static:
            model = self.model.clone()
            model.reshape({i.get_any_name(): self.ov.PartialShape([rows, width]) for i in model.inputs})
            self.static[rows, width] = self.core.compile_model(model, "CPU", self.config).create_infer_request()
        return self.static[rows, width]


def feed(rows: int, width: int) -> dict[str, np.ndarray]:
    return {"input_ids": np.full((rows, width), 1000, np.int64), "attention_mask": np.ones((rows, width), np.int64)}


def per_call_ms(calls: list[tuple[object, dict[str, np.ndarray]]], n: int) -> float:
    """CPU ms per call over `n` calls cycling through `calls` (each a request and its feed), after one warm pass."""
    for request, inputs in calls:
        request.infer(inputs)
    start = time.process_time()
    for i in range(n):
        request, inputs = calls[i % len(calls)]
        request.infer(inputs)
    return (time.process_time() - start) * 1000 / n


def arrival_order_ms(compiler: Compiler, request, rows: list[np.ndarray], layout, per_call: int, quantum: int) -> float:
    """CPU ms per row over `rows` in calls of `per_call` rows in arrival order, each trimmed to its longest row;
    `quantum` > 0: rounded up to a multiple of `quantum` and run on a graph compiled for that shape."""
    start = time.process_time()
    for i in range(0, len(rows), per_call):
        batch = pad(rows[i : i + per_call], layout)
        width = int(batch.attention_mask.sum(axis=1).max())
        if quantum:
            padded = -(-width // quantum) * quantum
            ids = np.zeros((len(batch.input_ids), padded), np.int64)
            mask = np.zeros_like(ids)
            ids[:, :width], mask[:, :width] = batch.input_ids[:, :width], batch.attention_mask[:, :width]
            compiler.fixed(*ids.shape).infer({"input_ids": ids, "attention_mask": mask})
        else:
            request.infer({"input_ids": batch.input_ids[:, :width], "attention_mask": batch.attention_mask[:, :width]})
    return (time.process_time() - start) * 1000 / len(rows)


def repository(workdir: Path) -> Path:
    from export.build import Progress, export
    from export.request import ExportRequest

    repo = workdir / "repository"
    if not (repo / default_model.NAME / "config.pbtxt").exists():
        export(ExportRequest(default_model.checkpoint(), repo, default_model.NAME, target="openvino"), Progress())
    return repo


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.openvino_shapes", description=__doc__)
    ap.add_argument("--dtype", choices=sorted(PRECISION_HINTS), default="bfloat16")
    ap.add_argument("--quantum", type=int, default=16, help="static shapes: widths rounded up to a multiple of this")
    ap.add_argument("-n", type=int, default=1024, help="texts in the arrival-order rows")
    ap.add_argument("--workdir", type=Path, default=ROOT / "build" / "bench-openvino-shapes")
    args = ap.parse_args(argv)

    repo = repository(args.workdir)
    onnx = repo / f"{default_model.NAME}_encoder" / "1" / "model.onnx"
    compiler = Compiler(onnx, args.dtype)
    request = compiler.dynamic()
    before = private_mb()
    fixed = {w: compiler.fixed(1, w) for w in (32, 40, 41, 48)}
    static_mb = (private_mb() - before) / len(fixed)

    print(f"all-MiniLM-L6-v2, OpenVINO {args.dtype}, one thread; {machine.describe()}")
    head = f"{'calls (rows × width)':44} {'dynamic ms':>11} {'static ms':>10}"
    print(f"{head}\n{'-' * len(head)}")
    shapes = {
        "the same shape, 1 × 40": [(1, 40)],
        "two widths alternating, 1 × 40 / 1 × 41": [(1, 40), (1, 41)],
        "two widths alternating, 1 × 32 / 1 × 48": [(1, 32), (1, 48)],
        "a cycle of 41 widths, 1 × 20 … 1 × 60": [(1, w) for w in range(20, 61)],
    }
    for name, cycle in shapes.items():
        dynamic = per_call_ms([(request, feed(*s)) for s in cycle], 300)
        static = None
        if all(width in fixed for _, width in cycle):
            static = per_call_ms([(fixed[s[1]], feed(*s)) for s in cycle], 300)
        print(f"{name:44} {dynamic:11.2f} {'' if static is None else f'{static:10.2f}'}")
    print(f"private memory of one more static shape: {static_mb:.0f} MB")

    tok, layout = preprocessor(repo / f"{default_model.NAME}_preprocess")
    rows = frame_all(encode(tok, WORKLOADS["mixed-5-60"](args.n)), layout, "END")
    static_head = f"static ×{args.quantum} ms/row"
    head = f"{'mixed 5–60 words, arrival order':32} {'dynamic ms/row':>15} {static_head:>20} {'ratio':>6} {'shapes':>7}"
    print(f"\n{head}\n{'-' * len(head)}")
    for per_call in (1, 2, 3, 4):
        arrival_order_ms(compiler, request, rows, layout, per_call, args.quantum)  # compiles each static shape once
        dynamic = arrival_order_ms(compiler, request, rows, layout, per_call, 0)
        static = arrival_order_ms(compiler, request, rows, layout, per_call, args.quantum)
        calls = f"{per_call} row{'s' if per_call > 1 else ''} a call"
        print(f"{calls:32} {dynamic:15.2f} {static:20.2f} {static / dynamic:6.2f} {len(compiler.static):7}")
    print(f"static shapes compiled: {len(compiler.static)}, private memory now {private_mb():.0f} MB")


if __name__ == "__main__":
    main()

"""`python -m bench --gpu`: tokens/s and model FLOPs utilisation of a deployed GPU stack.

The bundled CPU tritonserver has no TensorRT backend, so this mode does not start servers:
it drives a stack started with `docker compose up` (TensorRT engines written by
`python -m export … --target tensorrt`) over Triton's gRPC port and the adapter, e.g.

    python -m bench --gpu --checkpoint /models/e5-mistral --name e5-mistral \\
        --triton-url localhost:8001 --adapter-url http://localhost:30000

MFU = 2 × parameters × tokens/s ÷ the card's dense fp16/bf16 peak (a forward pass costs
about two FLOPs per parameter per token; attention's extra term is left out, so this
slightly understates long inputs).
"""

from __future__ import annotations

import argparse
import json
import struct
import time
from pathlib import Path

from bench import runners
from bench.mfu import mfu, peak_tflops
from bench.workloads import WORKLOADS


def parameters(checkpoint: Path) -> int:
    """Parameter count from the safetensors headers (no weights are read)."""
    total = 0
    for f in sorted(checkpoint.glob("*.safetensors")):
        with f.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        for key, tensor in header.items():
            if key != "__metadata__":
                n = 1
                for d in tensor["shape"]:
                    n *= d
                total += n
    if not total:
        raise SystemExit(f"no safetensors weights in {checkpoint}")
    return total


def main(args: argparse.Namespace) -> None:
    if not (args.triton_url and args.adapter_url and args.checkpoint and args.name):
        raise SystemExit("--gpu needs --checkpoint, --name, --triton-url and --adapter-url")
    params = parameters(args.checkpoint)
    peak, gpu = peak_tflops(args.peak_tflops)
    concurrency = [int(c) for c in args.concurrency.split(",") if c]
    workloads = {
        "queries 5–20 words": WORKLOADS["queries-5-20"](args.sweep_n * 4),
        "documents 20–400 words": WORKLOADS["documents-20-400"](args.sweep_n),
    }
    rows: list[tuple[str, runners.Result]] = []
    for w, texts in workloads.items():
        for per in (args.batch, 1):
            for c in concurrency:
                rows.append(
                    (w, runners.triton_direct(args.triton_url, args.name, texts, per, c, f"Triton {per}/req, c {c}"))
                )
                rows.append((w, runners.served(args.adapter_url, args.name, texts, per, c, f"served {per}/req, c {c}")))
    print(f"\n{args.name}: {params / 1e9:.2f} B parameters on {gpu} (peak {peak:.0f} TFLOPS dense)\n")
    head = f"{'workload':24} {'path':24} {'items/s':>9} {'tokens/s':>11} {'MFU':>7} {'p50 ms':>8} {'p99 ms':>8}"
    print(head + "\n" + "-" * len(head))
    out = []
    for w, r in rows:
        utilisation = mfu(2 * params * r.tokens_per_s, peak)
        print(
            f"{w:24} {r.name:24} {r.items_per_s:9.1f} {r.tokens_per_s:11.0f} {utilisation:7.1%} "
            f"{r.percentile(50):8.1f} {r.percentile(99):8.1f}"
        )
        out.append({"workload": w, **r.row(), "mfu": round(utilisation, 4)})
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench-gpu-{args.name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"model": args.name, "gpu": gpu, "parameters": params, "rows": out}, indent=2))
    print(f"\nwritten {path}")

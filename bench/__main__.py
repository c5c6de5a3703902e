"""`python -m bench`: the served path next to in-process ONNX Runtime and sentence-transformers, in one run.

Starts its own tritonserver and adapter on free ports, runs fixed seeded workloads,
prints a table with ratios against in-process ONNX Runtime and writes it as JSON.
Run it on a quiet machine: anything else running changes every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from bench import runners
from bench.workloads import WORKLOADS
from export.build import ExportRequest, Progress, export
from launcher import default_model
from launcher.processes import free_port, start_adapter, stop, wait_http
from launcher.tritonserver import TritonPorts, TritonServer

ROOT = Path(__file__).resolve().parent.parent


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--checkpoint", type=Path, help="checkpoint folder (default: the embedded all-MiniLM-L6-v2)")
    ap.add_argument("--name", default=None)
    ap.add_argument("--workload", choices=sorted(WORKLOADS), default="mixed-5-60")
    ap.add_argument("-n", type=int, default=2048, help="texts in the workload")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32, help="texts per request / in-process batch")
    ap.add_argument("--workdir", type=Path, default=ROOT / "build" / "bench")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--skip-st", action="store_true", help="skip in-process sentence-transformers")
    ap.add_argument(
        "--export-arg", action="append", default=[], help="flag for the export, e.g. --export-arg=--encoder-instances=2"
    )
    return ap.parse_args()


def prepare(args: argparse.Namespace) -> tuple[Path, str, Path]:
    from export.__main__ import parse_args as export_args
    from export.__main__ import serving_from_args

    checkpoint = args.checkpoint or default_model.checkpoint()
    name = args.name or (default_model.NAME if args.checkpoint is None else checkpoint.name)
    repo = args.workdir / "repository"
    serving = serving_from_args(export_args([str(checkpoint), *args.export_arg]))
    export(ExportRequest(checkpoint=checkpoint, repository=repo, name=name, serving=serving), Progress())
    return repo, name, checkpoint


def triton_stats(triton: TritonServer, name: str, when: str) -> str:
    """Cumulative per-model queue and compute time from Triton's statistics API."""
    import tritonclient.http as httpclient

    stats = httpclient.InferenceServerClient(triton.http_url).get_inference_statistics()
    lines = [f"Triton statistics {when} (ms per execute / per request):"]
    for m in stats["model_stats"]:
        if not m["name"].startswith(name):
            continue
        inf = m["inference_stats"]
        n_exec, n_req = max(m["execution_count"], 1), max(inf["success"]["count"], 1)
        lines.append(
            f"  {m['name']:34} executes {m['execution_count']:6} requests {inf['success']['count']:6} "
            f"queue/req {inf['queue']['ns'] / n_req / 1e6:8.2f} compute/exec "
            f"{sum(inf[k]['ns'] for k in ('compute_input', 'compute_infer', 'compute_output')) / n_exec / 1e6:8.2f}"
        )
    return "\n".join(lines)


def table(results: list[runners.Result], baseline: runners.Result) -> str:
    head = f"{'path':44} {'items/s':>9} {'tokens/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'× ORT':>7}"
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(
            f"{r.name:44} {r.items_per_s:9.1f} {r.tokens_per_s:10.0f} {r.percentile(50):8.1f} "
            f"{r.percentile(99):8.1f} {r.items_per_s / baseline.items_per_s:7.2f}"
        )
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    texts = WORKLOADS[args.workload](args.n)
    queries = WORKLOADS["queries-5-20"](200)
    repo, name, checkpoint = prepare(args)
    workdir = args.workdir / "run"
    triton = TritonServer(repo, workdir, TritonPorts(free_port(), free_port(), free_port()))
    adapter = None
    results: list[runners.Result] = []
    try:
        triton.start()
        triton.wait_ready(300)
        port = free_port()
        adapter = start_adapter(port, triton.grpc_url, workdir / "adapter.log", "--log-level", "warning")
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health/ready", adapter)
        b, c = args.batch, args.concurrency
        ort = runners.onnxruntime_inprocess(repo, name, texts, b, f"in-process ORT (sorted batches of {b})")
        results.append(ort)
        if not args.skip_st:
            results.append(
                runners.sentence_transformers_inprocess(checkpoint, texts, b, f"in-process sentence-transformers ({b})")
            )
        results.append(runners.served(url, name, texts, b, c, f"served: {b}/request, concurrency {c}"))
        print(triton_stats(triton, name, "after served 32/request"))
        results.append(runners.served(url, name, texts, 1, c, f"served: 1/request, concurrency {c}"))
        results.append(
            runners.triton_direct(triton.grpc_url, name, texts, b, c, f"Triton gRPC direct: {b}/request, c {c}")
        )
        results.append(
            runners.triton_direct(triton.grpc_url, name, texts, 1, c, f"Triton gRPC direct: 1/request, c {c}")
        )
        single_ort = runners.onnxruntime_inprocess(repo, name, queries, 1, "in-process ORT: one short query")
        single = runners.served(url, name, queries, 1, 1, "served: one short query, concurrency 1")
        results += [single_ort, single]
    finally:
        stop(adapter)
        triton.stop()
    print(f"\n{args.workload}, {args.n} texts; {platform.processor() or platform.machine()}, {os.cpu_count()} cores\n")
    print(table(results, ort))
    print(
        f"\nsingle short query p50: served {single.percentile(50):.1f} ms vs in-process ORT "
        f"{single_ort.percentile(50):.1f} ms (+{single.percentile(50) - single_ort.percentile(50):.1f} ms)"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"bench-{name}-{args.workload}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "workload": args.workload,
                "n": args.n,
                "cores": os.cpu_count(),
                "baseline": ort.name,
                "results": [r.row() for r in results],
            },
            indent=2,
        )
    )
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()

"""`python -m bench.request_rate`: a small model at a high request rate, by adapter workers.

One short query (1–3 words) per request, the load that a small embedding model serves most and
that tests the adapter rather than the encoder: requests/s, p50 and p99 at each concurrency, for
1, 2, 4 and 8 adapter workers (`EMBED_WORKERS`) on one Triton, and beside each the CPU time per
request of every serving process (adapter, Triton's core, each Python-backend stub), which barely
moves with the noise of a shared machine. The load comes from `--load-processes` processes (one per
four cores, at most four: one aiohttp loop cannot keep eight adapter workers busy), whose own CPU ms
per request is reported beside the servers' as `load generator`. Exports the embedded
all-MiniLM-L6-v2 (`local` target) unless `--repository` names an exported one (the GPU run passes
its `torch` export).

    python -m bench.request_rate --workers 1,2 --concurrency 64
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from bench import cpu, machine, runners
from bench.workloads import WORKLOADS
from launcher import default_model
from launcher.processes import free_port, start_adapter, stop, wait_http
from launcher.stack import running_stack

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.request_rate", description=__doc__)
    ap.add_argument("--repository", type=Path, help="an exported repository (default: export the embedded model)")
    ap.add_argument("--model", default=default_model.NAME)
    ap.add_argument("--workers", default="1,2,4,8", help="adapter worker counts to compare")
    ap.add_argument("--concurrency", default="64,256")
    ap.add_argument("-n", type=int, default=4000, help="requests per point")
    ap.add_argument("--workload", choices=sorted(WORKLOADS), default="short-1-3", help="the texts, one per request")
    ap.add_argument(
        "--load-processes",
        type=int,
        default=max(1, min(4, (os.cpu_count() or 1) // 4)),
        help="processes generating the load (default: one per four cores, at most four)",
    )
    ap.add_argument("--workdir", type=Path, default=ROOT / "build" / "bench-request-rate")
    return ap.parse_args(argv)


def repository(args: argparse.Namespace) -> Path:
    if args.repository:
        return args.repository
    from export.build import Progress, export
    from export.request import ExportRequest

    repo = args.workdir / "repository"
    if not (repo / args.model / "config.pbtxt").exists():
        export(ExportRequest(default_model.checkpoint(), repo, args.model, hf_id=default_model.HF_ID), Progress())
    return repo


def measure(args: argparse.Namespace) -> list[tuple[int, runners.Result]]:
    queries = WORKLOADS[args.workload](args.n)
    rows = []
    with running_stack(repository(args), args.workdir / "run", "--log-level", "warning") as stack:
        for workers in (int(w) for w in args.workers.split(",") if w):
            port = free_port()
            log = args.workdir / "run" / f"adapter-{workers}.log"
            flags = ("--log-level", "warning", "--max-in-flight", "1024")
            flags += ("--workers", str(workers)) if workers > 1 else ()
            adapter = start_adapter(port, stack.grpc_url, log, *flags, admin_key=stack.triton.admin_key)
            try:
                wait_http(f"http://127.0.0.1:{port}/health/ready", adapter, timeout=180)
                processes = cpu.Processes(stack.triton.process.pid, (adapter.pid,))
                url = f"http://127.0.0.1:{port}"
                runners.served(url, args.model, queries[:512], 1, 64, "warm-up")
                for c in (int(c) for c in args.concurrency.split(",") if c):
                    name = f"{workers} worker{'s' if workers > 1 else ''}, concurrency {c}"
                    (result, client_ms), result.cpu_ms = cpu.measure(
                        processes,
                        lambda c=c, name=name, url=url: runners.served_by(
                            args.load_processes, url, args.model, queries, 1, c, name
                        ),
                        lambda out: out[0].requests,
                    )
                    result.cpu_ms = {**(result.cpu_ms or {}), "load generator": client_ms}
                    rows.append((workers, result))
                    print(report_line(result, args.model), flush=True)
            finally:
                stop(adapter)
    return rows


def report_line(r: runners.Result, model: str) -> str:
    from bench.__main__ import short_label

    return (
        f"{r.name:32} {r.items_per_s:9.0f} {r.percentile(50):8.1f} {r.percentile(99):8.1f}  "
        f"{cpu.summary(r.cpu_ms, short_label(model))}"
    )


def report(rows: list[tuple[int, runners.Result]], model: str, workload: str) -> str:
    head = (
        f"{'adapter workers, concurrency':32} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}  CPU ms per request by process"
    )
    words = workload.split("-", 1)[1].replace("-", "–")
    lines = [f"{model}, one {words} word text per request; {machine.describe()}", head, "-" * len(head)]
    lines += [report_line(r, model) for _, r in rows]
    one = {r.name.split(", ")[1]: r.items_per_s for w, r in rows if w == 1}
    for w, r in rows:
        c = r.name.split(", ")[1]
        if w > 1 and c in one:
            lines.append(f"  {r.name}: {r.items_per_s / one[c]:.2f}× one worker")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.strftime("%Y-%m-%d %H:%M")
    rows = measure(args)
    print(f"\n{start}\n{report(rows, args.model, args.workload)}")


if __name__ == "__main__":
    main()

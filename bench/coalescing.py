"""`python -m bench.coalescing`: A/B rounds of the adapter's coalescing settings and the encoders' batching delay.

`make bench` compares coalescing on and off in one run; this script decides the defaults with
interleaved rounds, since one run on a shared 2-core machine drifts by up to 15 %:

- `adapters` (default): one Triton, four adapters (coalescing off, `--calls-in-flight` 2, 4,
  8); short queries at concurrency 16 and 64 and documents at 16, one item per request.
- `delay`: two Tritons exported with `--queue-delay-us` 1000 and 0, each behind a coalescing
  adapter; 1 and 32 texts per request at concurrency 16 and a single query's p50.
"""

from __future__ import annotations

import argparse
import statistics
from contextlib import ExitStack
from pathlib import Path

from bench import machine, runners
from bench.__main__ import second_adapter
from bench.workloads import WORKLOADS
from export.build import Progress, export
from export.request import ExportRequest, Serving
from launcher import default_model
from launcher.stack import running_stack

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "coalescing"
ADAPTERS = {
    "coalescing off": ("--coalesce", "false"),
    "calls_in_flight 2": ("--calls-in-flight", "2"),
    "calls_in_flight 4": ("--calls-in-flight", "4"),
    "calls_in_flight 8": ("--calls-in-flight", "8"),
}


def repository(delay_us: int) -> Path:
    repo = WORK / f"repository-{delay_us}"
    if not (repo / "m" / "config.pbtxt").exists():
        serving = Serving(queue_delay_us=delay_us)
        export(ExportRequest(default_model.checkpoint(), repo, "m", serving=serving), Progress())
    return repo


def report(columns: list[str], results: dict[str, list[list[float]]]) -> None:
    print(f"\n{machine.describe()}; medians of {len(next(iter(results.values())))} interleaved rounds")
    print(f"{'':20}" + "".join(f"{c:>22}" for c in columns))
    for name, rounds in results.items():
        print(f"{name:20}" + "".join(f"{statistics.median(col):22.1f}" for col in zip(*rounds, strict=True)))


def adapters(rounds: int) -> None:
    queries, documents = WORKLOADS["queries-5-20"](512), WORKLOADS["documents-20-400"](96)
    results: dict[str, list[list[float]]] = {}
    with ExitStack() as stack:
        triton = stack.enter_context(running_stack(repository(0), WORK / "run", "--log-level", "warning"))
        urls = {
            k: stack.enter_context(second_adapter(triton, WORK / "run", *flags))[0] for k, flags in ADAPTERS.items()
        }
        for _ in range(rounds):
            for name, url in urls.items():
                row = [
                    runners.served(url, "m", queries, 1, 16, "").items_per_s,
                    runners.served(url, "m", queries, 1, 64, "").items_per_s,
                    runners.served(url, "m", documents, 1, 16, "").items_per_s,
                ]
                results.setdefault(name, []).append(row)
                print(name, [round(x, 1) for x in row], flush=True)
    report(["queries c16 /s", "queries c64 /s", "documents c16 /s"], results)


def delay(rounds: int) -> None:
    texts, queries = WORKLOADS["mixed-5-60"](768), WORKLOADS["queries-5-20"](150)
    results: dict[str, list[list[float]]] = {}
    with ExitStack() as stack:
        urls = {
            f"delay {d} µs": stack.enter_context(
                running_stack(repository(d), WORK / f"run-{d}", "--log-level", "warning")
            ).adapter_url
            for d in (1000, 0)
        }
        for _ in range(rounds):
            for name, url in urls.items():
                row = [
                    runners.served(url, "m", texts, 1, 16, "").items_per_s,
                    runners.served(url, "m", texts, 32, 16, "").items_per_s,
                    runners.served(url, "m", queries, 1, 1, "").percentile(50),
                ]
                results.setdefault(name, []).append(row)
                print(name, [round(x, 1) for x in row], flush=True)
    report(["1/req c16 /s", "32/req c16 /s", "single p50 ms"], results)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.coalescing", description=__doc__)
    ap.add_argument("what", choices=("adapters", "delay"), nargs="?", default="adapters")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    (adapters if args.what == "adapters" else delay)(args.rounds)


if __name__ == "__main__":
    main()

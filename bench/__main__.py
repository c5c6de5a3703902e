"""`python -m bench`: the served path next to the alternatives a user would pick, in one run.

Exports the model as `make serve` does (`--target auto`: the fastest CPU engine measured at export),
starts its own tritonserver and adapter on free ports, and measures on fixed seeded workloads:
- in-process engines on the same graph and batches: ONNX Runtime fp32, PyTorch fp32, and PyTorch bf16
  (autocast) where the CPU has bf16 instructions; the fastest is the baseline of every ratio; and
  in-process sentence-transformers;
- the served path (adapter → Triton) and Triton directly over gRPC, at the issue's targets
  and over a concurrency sweep, for short queries, mixed documents and (for models with an
  image tower) images of varied sizes;
- the peer server infinity-emb in its own virtual environment (`--peers none` skips it).
Prints tables, writes JSON and a PNG chart to `--out`. Run it on a quiet machine: anything
else running changes every figure. `--gpu` measures a deployed GPU stack instead (bench/gpu.py).
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench import cpu, hops, machine, runners
from bench.memory import tree_peak_mb
from bench.workloads import WORKLOADS, images
from contract import ADMIN_HEADER
from export.build import Progress, export
from export.engine_choice import Candidate
from export.request import ExportRequest
from launcher import default_model
from launcher.processes import free_port, start_adapter, stop, wait_http
from launcher.stack import Stack, running_stack

ROOT = Path(__file__).resolve().parent.parent
Result = runners.Result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--checkpoint", type=Path, help="checkpoint folder (default: the embedded all-MiniLM-L6-v2)")
    ap.add_argument("--tiny-decoder", action="store_true", help="a tiny random e5-mistral-style checkpoint")
    ap.add_argument("--name", default=None)
    ap.add_argument("-n", type=int, default=2048, help="texts in the targets workload (mixed 5–60 words)")
    ap.add_argument("--sweep-n", type=int, default=512, help="items per sweep point (documents and images: a quarter)")
    ap.add_argument("--concurrency", default="1,4,16,64", help="concurrency sweep (empty: no sweep)")
    ap.add_argument("--batch", type=int, default=32, help="texts per request / in-process batch")
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of the served rows the goals read, alternating; the table shows each one's median "
        "(passes move by ±10 %% on a 2-core machine)",
    )
    ap.add_argument("--peers", choices=("infinity", "none"), default="infinity")
    ap.add_argument("--skip-st", action="store_true", help="skip in-process sentence-transformers")
    ap.add_argument("--skip-rerank", action="store_true", help="skip the reranking table (python -m bench.rerank)")
    ap.add_argument("--skip-sparse", action="store_true", help="skip the sparse table (python -m bench.sparse)")
    ap.add_argument("--workdir", type=Path, default=ROOT / "build" / "bench")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument(
        "--export-arg", action="append", default=[], help="flag for the export, e.g. --export-arg=--encoder-instances=2"
    )
    ap.add_argument("--gpu", action="store_true", help="measure a deployed GPU stack (see bench/gpu.py)")
    ap.add_argument("--triton-url", help="--gpu: Triton's gRPC address, e.g. localhost:8001")
    ap.add_argument("--adapter-url", help="--gpu: the adapter, e.g. http://localhost:30000")
    ap.add_argument("--peak-tflops", type=float, help="--gpu: the card's dense fp16/bf16 peak (default: by its name)")
    return ap.parse_args(argv)


@dataclass
class Model:
    checkpoint: Path
    name: str
    repository: Path  # the served export (`--target auto` unless --export-arg says otherwise)
    image_ensemble: str  # "" for text-only models
    onnx_repository: Path  # a `local` export of the same checkpoint: the in-process ONNX Runtime graph
    engine: str  # what the served export runs, from its card


def prepare(args: argparse.Namespace) -> Model:
    from export.__main__ import parse_args as export_args
    from export.__main__ import serving_from_args
    from tests import tiny

    if args.tiny_decoder:
        checkpoint = args.workdir / "tiny-e5-mistral"
        if not (checkpoint / "config.json").exists():
            tiny.mistral(checkpoint)
    else:
        checkpoint = args.checkpoint or default_model.checkpoint()
    name = args.name or (default_model.NAME if checkpoint == default_model.checkpoint() else checkpoint.name)
    repo, onnx_repo = args.workdir / "repository", args.workdir / "repository-onnx"
    for folder in (repo, onnx_repo):  # the bench's own: nothing of an earlier run (a fused model) stays
        shutil.rmtree(folder, ignore_errors=True)
    parsed = export_args([str(checkpoint), *args.export_arg])
    serving = serving_from_args(parsed)
    request = ExportRequest(
        checkpoint=checkpoint, repository=repo, name=name, serving=serving, target=parsed.target, dtype=parsed.dtype
    )
    card = export(request, Progress()).plan.card(request)
    export(ExportRequest(checkpoint=checkpoint, repository=onnx_repo, name=name, serving=serving), Progress())
    image = f"{name}_image" if (repo / f"{name}_image").exists() else ""
    return Model(checkpoint, name, repo, image, onnx_repo, _served_engine(repo, name) or card.engine)


def _served_engine(repository: Path, name: str) -> str:
    """The engine the ensemble's card names (what the export chose)."""
    from google.protobuf import json_format

    from contract import EnsembleCard, parameters
    from export.repository import parse_config

    config = json_format.MessageToDict(
        parse_config(repository / name / "config.pbtxt"), preserving_proto_field_name=True
    )
    return EnsembleCard.from_parameters(parameters(config)).engine


def in_process_engines(model: Model, texts: list[str], b: int) -> list[tuple[Candidate, Result]]:
    """Every engine `--target auto` weighs on this CPU (ONNX Runtime and OpenVINO fp32, PyTorch fp32, and
    OpenVINO and PyTorch bf16 where the CPU has bf16 instructions), each in a fresh process on the same
    sorted batches."""
    from export.engine_choice import candidates, cpu_flags

    return [(c, in_process_engine(model, c, texts, b)) for c in candidates(cpu_flags())]


def in_process_engine(model: Model, c: Candidate, texts: list[str], b: int) -> Result:
    """One candidate engine in a fresh process, on `texts` in length-sorted batches of `b`."""
    from export.request import ONNX_RUNTIMES

    label = f"in-process {c.runtime} {c.dtype} (sorted batches of {b})"
    if c.target in ONNX_RUNTIMES:
        return runners.isolated(
            runners.onnx_inprocess, model.onnx_repository, model.name, texts, b, label, ONNX_RUNTIMES[c.target], c.dtype
        )
    return runners.isolated(
        runners.torch_inprocess, model.checkpoint, model.onnx_repository, model.name, texts, b, label, c.dtype
    )


def triton_stats(stack: Stack, name: str) -> str:
    """Per-model executes, requests, queue and compute time from Triton's statistics API."""
    import tritonclient.http as httpclient

    stats = httpclient.InferenceServerClient(stack.triton.http_url).get_inference_statistics(
        headers={ADMIN_HEADER: stack.triton.admin_key}
    )
    lines = ["Triton statistics over the whole run (queue ms per request, compute ms per execute):"]
    for m in stats["model_stats"]:
        if not m["name"].startswith(name) or not m["execution_count"]:
            continue
        inf = m["inference_stats"]
        n_req = max(inf["success"]["count"], 1)
        compute = sum(inf[k]["ns"] for k in ("compute_input", "compute_infer", "compute_output")) / n_req
        per_exec = compute * n_req / m["execution_count"]  # per-request sums, spread over the executes
        lines.append(
            f"  {m['name']:36} executes {m['execution_count']:7} requests {n_req:7} "
            f"queue/req {inf['queue']['ns'] / n_req / 1e6:8.2f} compute/exec {per_exec / 1e6:8.2f}"
        )
    return "\n".join(lines)


def short_label(model: str):
    """`stub all-MiniLM-L6-v2_encoder` → `encoder`, `triton core` → `core`."""
    return lambda label: label.removeprefix("stub ").removeprefix(f"{model}_").removeprefix("triton ")


def table(title: str, results: list[Result], baseline: Result | None, model: str = "") -> str:
    head = (
        f"{'path':52} {'items/s':>9} {'tokens/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'peak MB':>8} {'× best':>6}"
        "  CPU ms per request by process"
    )
    lines = [title, head, "-" * len(head)]
    for r in results:
        ratio = f"{r.items_per_s / baseline.items_per_s:6.2f}" if baseline else "     -"
        peak = f"{r.peak_mb:8.0f}" if r.peak_mb is not None else "       -"
        lines.append(
            f"{r.name:52} {r.items_per_s:9.1f} {r.tokens_per_s:10.0f} {r.percentile(50):8.1f} "
            f"{r.percentile(99):8.1f} {peak} {ratio}  {cpu.summary(r.cpu_ms, short_label(model))}"
        )
    return "\n".join(lines)


@dataclass
class Run:
    """Everything one `python -m bench` measures, grouped as the tables print it."""

    targets: list[Result]
    baseline: Result
    single: list[Result]
    sweeps: dict[str, list[Result]]  # workload → results over concurrency (name holds the path and c)
    sweep_baselines: dict[str, Result]
    one_per_call: Result | None = None  # the fastest engine one text a call (absent when the batch is 1)


class Metered:
    """Runs a measurement and attaches the CPU each serving process spent per request."""

    def __init__(self, processes: cpu.Processes) -> None:
        self.processes = processes

    def __call__(self, runner, *args) -> Result:
        result, result.cpu_ms = cpu.measure(self.processes, lambda: runner(*args), lambda r: r.requests)
        return result


def served_targets(
    m: Metered,
    stack: Stack,
    uncoalesced: str,
    model: Model,
    fused: str,
    texts: list[str],
    b: int,
    c: int,
    rounds: int = 1,
) -> list[Result]:
    """The served path with and without coalescing, and over gRPC the ensemble and the alternatives to it.
    The two rows the goals read: the median of `rounds` alternating rounds."""
    url, grpc, name = stack.adapter_url, stack.grpc_url, model.name
    goal_rows = [
        lambda per=per: m(runners.served, url, name, texts, per, c, f"served: {per}/request, concurrency {c}")
        for per in (b, 1)
    ]
    rows = [
        *runners.median_of_rounds(goal_rows, rounds),
        m(runners.served, uncoalesced, name, texts, b, c, f"served, coalescing off: {b}/request, c {c}"),
        m(runners.served, uncoalesced, name, texts, 1, c, f"served, coalescing off: 1/request, c {c}"),
        m(runners.triton_direct, grpc, name, texts, b, c, f"Triton gRPC direct: {b}/request, c {c}"),
        m(runners.triton_direct, grpc, name, texts, 1, c, f"Triton gRPC direct: 1/request, c {c}"),
    ]
    if fused:
        rows += [
            m(hops.encoder_direct, grpc, model.repository, name, texts, 1, c, f"ids tokenised in front: 1/req, c {c}"),
            m(runners.triton_direct, grpc, fused, texts, 1, c, f"fused preprocess+encoder model: 1/req, c {c}"),
        ]
    return rows


def single_queries(
    m: Metered, stack: Stack, uncoalesced: str, model: Model, fused: str, queries: list[str]
) -> list[Result]:
    url, grpc, name = stack.adapter_url, stack.grpc_url, model.name
    rows = [
        m(runners.served, url, name, queries, 1, 1, "served (adapter → Triton)"),
        m(runners.served, uncoalesced, name, queries, 1, 1, "served, coalescing off"),
        m(runners.triton_direct, grpc, name, queries, 1, 1, "Triton gRPC direct (ensemble)"),
    ]
    if fused:
        rows += [
            m(hops.encoder_direct, grpc, model.repository, name, queries, 1, 1, "ids tokenised in front → encoder"),
            m(runners.triton_direct, grpc, fused, queries, 1, 1, "fused preprocess+encoder model"),
        ]
    return rows


def fusable(model: Model) -> bool:
    """A text model exported for the `local` target (its encoder a Python host of ONNX Runtime)."""
    encoder = model.repository / f"{model.name}_encoder" / "1"
    return not model.image_ensemble and (encoder / "model.py").exists() and (encoder / "model.onnx").exists()


@contextmanager
def second_adapter(stack: Stack, workdir: Path, *flags: str) -> Iterator[tuple[str, int]]:
    """Another adapter on the same Triton with other settings, for side-by-side figures: (URL, pid)."""
    port = free_port()
    adapter = start_adapter(
        port,
        stack.grpc_url,
        workdir / f"adapter-{port}.log",
        "--log-level",
        "warning",
        *flags,
        admin_key=stack.triton.admin_key,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health/ready", adapter, timeout=120)
        yield f"http://127.0.0.1:{port}", adapter.pid
    finally:
        stop(adapter)


def sweep(send, label: str, items: list, concurrency: list[int]) -> list[Result]:
    return [send(items, c, f"{label}, c {c}") for c in concurrency]


def main() -> None:
    args = parse_args()
    if args.gpu:
        from bench import gpu

        gpu.main(args)
        return
    concurrency = [int(c) for c in args.concurrency.split(",") if c]
    b, c = args.batch, 16
    texts = WORKLOADS["mixed-5-60"](args.n)
    queries = WORKLOADS["queries-5-20"](args.sweep_n)
    documents = WORKLOADS["documents-20-400"](max(args.sweep_n // 4, 1))
    workloads = {"queries 5–20 words": queries, "documents 20–400 words": documents}
    model = prepare(args)
    pairs = in_process_engines(model, texts, b)
    engines = [r for _, r in pairs]
    ort = engines[0]
    fastest, best = max(pairs, key=lambda p: p[1].items_per_s)  # every candidate passes the export's fidelity gate
    targets = list(engines)
    # The same engine one text a call: the baseline for one text per request, read call for call.
    one_per_call = in_process_engine(model, fastest, texts, 1) if b > 1 else None
    targets += [one_per_call] if one_per_call else []
    if not args.skip_st:
        targets.append(
            runners.isolated(
                runners.sentence_transformers_inprocess,
                model.checkpoint,
                texts,
                b,
                f"in-process sentence-transformers ({b})",
            )
        )
    sweep_baselines = {
        w: runners.isolated(runners.onnx_inprocess, model.onnx_repository, model.name, items, b, f"in-process ORT, {w}")
        for w, items in workloads.items()
    }
    single = [
        runners.isolated(runners.onnx_inprocess, model.onnx_repository, model.name, queries[:200], 1, "in-process ORT")
    ]
    sweeps: dict[str, list[Result]] = {w: [] for w in workloads}
    pictures = images(max(args.sweep_n // 4, 1)) if model.image_ensemble else []
    fused = hops.add_fused_model(model.repository, model.name) if fusable(model) else ""
    with (
        running_stack(model.repository, args.workdir / "run", "--log-level", "warning") as stack,
        second_adapter(stack, args.workdir / "run", "--coalesce", "false") as (uncoalesced, second_pid),
    ):
        m = Metered(cpu.Processes(stack.triton.process.pid, (stack.adapter.pid, second_pid)))
        served_rows = served_targets(m, stack, uncoalesced, model, fused, texts, b, c, args.rounds)
        single += single_queries(m, stack, uncoalesced, model, fused, queries[:200])
        for w, items in workloads.items():
            for label, url in (("served 1/req", stack.adapter_url), ("served 1/req, coalescing off", uncoalesced)):
                sweeps[w] += sweep(
                    lambda x, k, n, url=url: m(runners.served, url, model.name, x, 1, k, n), label, items, concurrency
                )
            sweeps[w] += sweep(
                lambda x, k, n: m(runners.triton_direct, stack.grpc_url, model.name, x, 1, k, n),
                "Triton direct 1/req",
                items,
                concurrency,
            )
        if pictures:
            uris = [{"image": "data:image/png;base64," + base64.b64encode(p).decode()} for p in pictures]
            sweeps["images 64–1024 px"] = sweep(
                lambda x, k, n: m(runners.served, stack.adapter_url, model.name, x, 1, k, n),
                "served 1/req",
                uris,
                concurrency,
            ) + sweep(
                lambda x, k, n: m(runners.triton_direct, stack.grpc_url, model.image_ensemble, x, 1, k, n, "IMAGE"),
                "Triton direct 1/req",
                pictures,
                concurrency,
            )
        peak = tree_peak_mb(stack.triton.process.pid, stack.adapter.pid)
        for r in served_rows:
            r.peak_mb = peak
        stats = triton_stats(stack, model.name)
    targets += served_rows
    if args.peers == "infinity":
        peer_targets, peer_single, peer_sweeps = run_infinity(args, model, texts, queries, workloads, b, c, concurrency)
        # infinity-emb's usage counts characters; the inputs are the same, so are their tokens.
        for r in peer_targets:
            r.tokens = ort.tokens
        for r in peer_single:
            r.tokens = single[0].tokens
        for w, rows in peer_sweeps.items():
            for r in rows:
                r.tokens = sweep_baselines[w].tokens
        targets += peer_targets
        single += peer_single
        for w, rows in peer_sweeps.items():
            sweeps[w] += rows
    run = Run(targets, best, single, sweeps, sweep_baselines, one_per_call)
    report(args, model, run, stats)
    if not args.skip_rerank:
        from bench import rerank

        options = rerank.parse_args(["--peers", args.peers, "--workdir", str(args.workdir / "rerank")])
        print()
        print(rerank.report(*rerank.measure(options)))
    if not args.skip_sparse:
        from bench import sparse

        print()
        print(sparse.report(*sparse.measure(sparse.parse_args(["--workdir", str(args.workdir / "sparse")]))))


def run_infinity(args, model: Model, texts, queries, workloads, b: int, c: int, concurrency: list[int]):
    from bench.peers import infinity

    with infinity(model.checkpoint, args.workdir / "peers", batch_size=b) as peer:

        def send(items, k, per, name):
            return runners.served(peer.url, peer.model, items, per, k, name, peer.path)

        rows = [
            send(texts, c, b, f"infinity-emb: {b}/request, concurrency {c}"),
            send(texts, c, 1, f"infinity-emb: 1/request, concurrency {c}"),
        ]
        single = [send(queries[:200], 1, 1, "infinity-emb")]
        sweeps = {
            w: sweep(lambda x, k, n: send(x, k, 1, n), "infinity-emb 1/req", items, concurrency)
            for w, items in workloads.items()
        }
        peak = tree_peak_mb(peer.process.pid)
        for r in rows:
            r.peak_mb = peak
    return rows, single, sweeps


def goals(args: argparse.Namespace, run: Run) -> str:
    """The performance issue's goals, each with this run's figure."""
    by_name = {r.name: r for r in run.targets}
    b, best = args.batch, run.baseline.items_per_s
    lines = [f"Goals (this run; {machine.describe()})", f"{'measure':60} {'figure':>9} {'goal':>9}  met"]

    def goal(measure: str, figure: float | None, target: float, higher: bool = True, unit: str = "×") -> None:
        if figure is None:
            return
        met = figure >= target if higher else figure <= target
        bound = f"{'≥' if higher else '≤'} {target:g}{unit}"
        lines.append(f"{measure:60} {figure:8.2f}{unit} {bound:>9}  {'yes' if met else 'NO'}")

    def rate(name: str) -> float | None:
        return by_name[name].items_per_s if name in by_name else None

    for per, vs_best, vs_peer in ((1, 0.75, 2.5), (b, 0.9, 2.0)):
        served = rate(f"served: {per}/request, concurrency 16")
        peer = rate(f"infinity-emb: {per}/request, concurrency 16")
        goal(
            f"served {per}/request, c 16 ÷ best in-process",
            served and served / best,
            vs_best,
        )
        if per == 1 and run.one_per_call:
            goal(
                "served 1/request, c 16 ÷ best in-process, 1 a call",
                served and served / run.one_per_call.items_per_s,
                vs_best,
            )
        goal(f"served {per}/request, c 16 ÷ infinity-emb", served and peer and served / peer, vs_peer)
    single = {r.name: r.percentile(50) for r in run.single}
    served_p50 = single.get("served (adapter → Triton)")
    overhead = served_p50 and served_p50 - run.single[0].percentile(50)
    goal("single short query p50 − in-process ORT p50", overhead, 3, False, " ms")
    queries = run.sweeps.get("queries 5–20 words", [])
    p99 = {r.name: r.percentile(99) for r in queries}
    on, off = p99.get("served 1/req, c 1"), p99.get("served 1/req, coalescing off, c 1")
    goal("queries sweep p99 at c 1, coalescing on − off", on and off and on - off, 0, False, " ms")
    return "\n".join(lines)


def report(args: argparse.Namespace, model: Model, run: Run, stats: str) -> None:
    from bench.chart import chart

    cpu = machine.describe()
    print(f"\n{model.name}; {cpu}; served engine: {model.engine}\n")
    title = f"Targets: mixed 5–60 words, {args.n} texts (× best: ÷ {run.baseline.name})"
    print(table(title, run.targets, run.baseline, model.name))
    for r in run.targets:
        if r.rounds:
            rates = " · ".join(f"{x:.1f}" for x in r.rounds)
            print(f"  {r.name}: the median of {len(r.rounds)} rounds ({rates} items/s)")
    print()
    print(table("Single short query, concurrency 1 (latency)", run.single, None, model.name))
    base = run.single[0].percentile(50)
    for r in run.single[1:]:
        print(f"  {r.name}: p50 {r.percentile(50):.1f} ms = in-process ORT + {r.percentile(50) - base:.1f} ms")
    for w, rows in run.sweeps.items():
        if not rows:
            continue
        print()
        print(table(f"Concurrency sweep: {w}", rows, run.sweep_baselines.get(w), model.name))
    print()
    print(stats)
    print()
    print(goals(args, run))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"bench-{model.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    stem.with_suffix(".json").write_text(
        json.dumps(
            {
                "model": model.name,
                "machine": cpu,
                "baseline": run.baseline.name,
                "targets": [r.row() for r in run.targets],
                "single": [r.row() for r in run.single],
                "sweeps": {w: [r.row() for r in rows] for w, rows in run.sweeps.items()},
                "sweep_baselines": {w: r.row() for w, r in run.sweep_baselines.items()},
            },
            indent=2,
        )
    )
    chart(run, f"{model.name} on {cpu}", stem.with_suffix(".png"))
    print(f"\nwritten {stem}.json and {stem}.png")


if __name__ == "__main__":
    main()

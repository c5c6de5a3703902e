"""`python -m bench.sparse`: sparse lexical weights, texts/s, served `/embed_sparse` next to FlagEmbedding's
own `BGEM3FlagModel.encode(return_sparse=True)` in-process, on the same CPU and texts.

The model is BGE-M3's layout (XLM-RoBERTa with `sparse_linear.pt` and `colbert_linear.pt`) in
all-MiniLM-L6-v2's shape (6 layers, 384 wide; random weights and a small BPE vocabulary: the hub is
out of reach, and the speed is the shape's). Rows:
- FlagEmbedding in-process, every text of the run in its `encode` (batches of --batch, its own length
  sort: the most one process can regroup), the baseline of the ratio;
- the served path, `POST /embed_sparse` (adapter → Triton), --batch texts a request at --concurrency,
  exported as `make serve` exports it (`--target auto`), and with ONNX Runtime fp32 (`--target local`).
The goal (issue 33): served (auto) ≥ 1.0× FlagEmbedding. `make bench` runs it after the reranking table.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from bench import machine, runners
from bench.workloads import WORKLOADS

ROOT = Path(__file__).resolve().parent.parent
MINILM_L6 = {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536}
GOAL = 1.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.sparse", description=__doc__)
    ap.add_argument("-n", type=int, default=1024, help="texts (mixed 5–60 words)")
    ap.add_argument("--batch", type=int, default=32, help="texts per request / in-process batch")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--workdir", type=Path, default=ROOT / "build" / "bench-sparse")
    return ap.parse_args(argv)


def prepare(workdir: Path, target: str) -> tuple[Path, Path, str]:
    """A MiniLM-L6-shaped BGE-M3, exported for `target` (`auto`, as `make serve` exports: the fastest engine
    this CPU runs that passes its fidelity gate; `local`: ONNX Runtime fp32)."""
    from export.build import Progress, export
    from export.request import ExportRequest
    from tests.tiny.bge_m3 import bge_m3

    checkpoint = workdir / "bge-m3-MiniLM-L6-shaped"
    if not (checkpoint / "sparse_linear.pt").exists():
        bge_m3(checkpoint, sizes=MINILM_L6)
    repository, name = workdir / f"repository-{target}", "bge-m3"
    if not (repository / name / "config.pbtxt").exists():
        export(ExportRequest(checkpoint, repository, name, target=target), Progress())  # type: ignore[arg-type]
    return checkpoint, repository, name


def engine(repository: Path, name: str) -> str:
    """What the export chose to run the encoder (the card's `engine`)."""
    from contract import EnsembleCard, parameters
    from export.repository import parse_config

    config = parse_config(repository / name / "config.pbtxt")
    return EnsembleCard.from_parameters(
        parameters({"parameters": {k: {"string_value": v.string_value} for k, v in config.parameters.items()}})
    ).engine


def flagembedding(checkpoint: Path, texts: list[str], batch: int, label: str) -> runners.Result:
    from FlagEmbedding import BGEM3FlagModel

    model = BGEM3FlagModel(str(checkpoint), use_fp16=False, devices="cpu")
    options = {"batch_size": batch, "return_dense": False, "return_sparse": True, "return_colbert_vecs": False}
    model.encode(texts[:batch], **options)  # warm-up
    start = time.perf_counter()
    model.encode(texts, **options)
    return runners.Result(label, len(texts), time.perf_counter() - start)


def served(url: str, requests: list[list[str]], concurrency: int, label: str) -> runners.Result:
    import aiohttp

    async def go() -> runners.Result:
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(600)) as client:

            async def send(texts: list[str]) -> int:
                async with client.post("/embed_sparse", json={"inputs": texts}) as r:
                    if r.status != 200:
                        raise RuntimeError(f"{url}/embed_sparse answered {r.status}: {(await r.text())[:300]}")
                    await r.read()
                    return int(r.headers.get("x-compute-tokens", 0))

            await send(requests[0])
            seconds, latencies, tokens = await runners.drive(requests, concurrency, send)
        return runners.Result(label, sum(len(t) for t in requests), seconds, latencies, tokens)

    return asyncio.run(go())


def measure(args: argparse.Namespace) -> tuple[list[runners.Result], runners.Result]:
    from launcher.stack import running_stack

    texts = WORKLOADS["mixed-5-60"](args.n)
    b, c = args.batch, args.concurrency
    rows = []
    for target in ("auto", "local"):
        checkpoint, repository, name = prepare(args.workdir, target)
        label = f"served /embed_sparse ({engine(repository, name)}): {b}/req, c {c}"
        with running_stack(repository, args.workdir / f"run-{target}", "--log-level", "warning") as stack:
            rows.append(served(stack.adapter_url, runners.chunks(texts, b), c, label))
    baseline = runners.isolated(flagembedding, checkpoint, texts, b, f"FlagEmbedding encode, fp32 (batches of {b})")
    baseline.tokens = rows[0].tokens  # the same texts
    return [baseline, *rows], baseline


def report(rows: list[runners.Result], baseline: runners.Result) -> str:
    from bench.__main__ import table

    ratio = rows[1].items_per_s / baseline.items_per_s  # the engine `make serve` would choose
    verdict = "met" if ratio >= GOAL else "NOT met"
    title = f"Sparse (BGE-M3 lexical weights): texts/s on {machine.describe()}"
    goal = f"goal: served ≥ {GOAL:.1f}× FlagEmbedding in-process: {ratio:.2f}× ({verdict})"
    return f"{table(title, rows, baseline)}\n{goal}"


def main() -> None:
    print(report(*measure(parse_args())))


if __name__ == "__main__":
    main()

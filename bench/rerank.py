"""`python -m bench.rerank`: reranking pairs/s, served next to in-process ONNX Runtime and infinity-emb.

One query × 32 documents (20–400 words) per request, concurrency 16, on a cross-encoder of
ms-marco-MiniLM-L6-v2's shape (BERT, 6 layers, 384 wide, its real WordPiece vocabulary; random
weights: the hub is out of reach, and the speed is the shape's). Rows:
- in-process ONNX Runtime on the same exported graph and the same pair tokenisation, every pair
  of the run sorted by length in batches of 32 (the baseline of the ratios: the most regrouping
  one process can do; its p50/p99 are per batch);
- the served path, `POST /v1/rerank` (adapter → Triton), and Triton directly over gRPC;
- infinity-emb's `/rerank` on the same checkpoint, in its own virtual environment (`--peers none`
  skips it).
`make bench` runs it after the embedding tables. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import numpy as np

from bench import machine, runners
from bench.workloads import WORKLOADS
from contract import QUERY, TEXT

ROOT = Path(__file__).resolve().parent.parent
Pairs = list[tuple[str, list[str]]]  # (query, documents) per request
MINILM_L6 = {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.rerank", description=__doc__)
    ap.add_argument("--requests", type=int, default=32, help="requests per row (each 1 query × --documents)")
    ap.add_argument("--documents", type=int, default=32, help="documents per request")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--peers", choices=("infinity", "none"), default="infinity")
    ap.add_argument("--workdir", type=Path, default=ROOT / "build" / "bench-rerank")
    return ap.parse_args(argv)


def workload(requests: int, documents: int) -> Pairs:
    queries = WORKLOADS["queries-5-20"](requests)
    docs = WORKLOADS["documents-20-400"](requests * documents)
    return [(q, docs[i * documents : (i + 1) * documents]) for i, q in enumerate(queries)]


def inprocess(repository: Path, name: str, requests: Pairs, batch: int, label: str) -> runners.Result:
    """The exported graph and the served pair tokenisation, in this process."""
    from google.protobuf import json_format

    from contract import PairParams, parameters
    from export.repository import parse_config
    from runtime.onnx_encoder import open_session
    from runtime.pairs import PairLayout, encode_pairs, pad_pairs
    from runtime.text import load_tokenizer

    folder = repository / f"{name}_preprocess"
    config = json_format.MessageToDict(parse_config(folder / "config.pbtxt"), preserving_proto_field_name=True)
    params = PairParams.from_parameters(parameters(config))
    tok, layout = load_tokenizer(str(folder / "1" / params.tokenizer)), PairLayout.of(params)
    session = open_session(str(repository / f"{name}_encoder" / "1" / "model.onnx"))
    names = {i.name for i in session.get_inputs()}

    def run(requests: Pairs) -> runners.Result:
        """Every pair of the run tokenised, sorted by length and run in batches (the most this process can
        regroup; the served path regroups only what arrives together)."""
        start, latencies = time.perf_counter(), []
        rows = [
            row
            for query, documents in requests
            for row in encode_pairs(tok, [query] * len(documents), documents, layout, "END")
        ]
        order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
        for i in range(0, len(order), batch):
            t0 = time.perf_counter()
            b = pad_pairs([rows[j] for j in order[i : i + batch]], layout)
            width = int(b.attention_mask.sum(axis=1).max())
            feed = {
                "input_ids": b.input_ids[:, :width],
                "attention_mask": b.attention_mask[:, :width],
                "token_type_ids": b.token_type_ids[:, :width],
            }
            session.run(None, {k: v for k, v in feed.items() if k in names})
            latencies.append(time.perf_counter() - t0)
        tokens = sum(len(ids) for ids, _ in rows)
        return runners.Result(label, len(rows), time.perf_counter() - start, latencies, tokens)

    run(requests[:2])  # warm-up
    return run(requests)


def served(url: str, model: str, requests: Pairs, concurrency: int, label: str, path: str, tei: bool) -> runners.Result:
    import aiohttp

    async def go() -> runners.Result:
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(600)) as client:

            async def send(request: tuple[str, list[str]]) -> int:
                query, documents = request
                body = {"model": model, "query": query, ("texts" if tei else "documents"): documents}
                async with client.post(path, json=body) as r:
                    if r.status != 200:
                        raise RuntimeError(f"{url}{path} answered {r.status}: {(await r.text())[:300]}")
                    answer = await r.json()
                    return 0 if tei else answer.get("usage", {}).get("prompt_tokens", 0)

            await send(requests[0])
            seconds, latencies, tokens = await runners.drive(list(requests), concurrency, send)
        return runners.Result(label, sum(len(d) for _, d in requests), seconds, latencies, tokens)

    return asyncio.run(go())


def triton_direct(grpc_url: str, model: str, requests: Pairs, concurrency: int, label: str) -> runners.Result:
    import tritonclient.grpc.aio as grpcclient

    def column(name: str, values: list[str]):
        data = np.array([[v.encode()] for v in values], dtype=np.object_)
        tensor = grpcclient.InferInput(name, list(data.shape), "BYTES")
        tensor.set_data_from_numpy(data)
        return tensor

    async def go() -> runners.Result:
        client = grpcclient.InferenceServerClient(grpc_url)

        async def send(request: tuple[str, list[str]]) -> int:
            query, documents = request
            r = await client.infer(model, [column(TEXT, documents), column(QUERY, [query] * len(documents))])
            return int(r.as_numpy("TOKEN_COUNT").sum())

        await send(requests[0])
        seconds, latencies, tokens = await runners.drive(list(requests), concurrency, send)
        await client.close()
        return runners.Result(label, sum(len(d) for _, d in requests), seconds, latencies, tokens)

    return asyncio.run(go())


def prepare(workdir: Path) -> tuple[Path, Path, str]:
    """A MiniLM-L6-shaped BERT cross-encoder, exported for the `local` target."""
    from export.build import Progress, export
    from export.request import ExportRequest
    from tests.tiny.cross_encoder import bert_reranker

    checkpoint = workdir / "ms-marco-MiniLM-L6-shaped"
    if not (checkpoint / "config.json").exists():
        bert_reranker(checkpoint, MINILM_L6)
    repository, name = workdir / "repository", "reranker"
    if not (repository / name / "config.pbtxt").exists():
        export(ExportRequest(checkpoint, repository, name), Progress())
    return checkpoint, repository, name


def measure(args: argparse.Namespace) -> tuple[list[runners.Result], runners.Result]:
    """Every row, and the in-process baseline."""
    from launcher.stack import running_stack

    checkpoint, repository, name = prepare(args.workdir)
    requests, c, n = workload(args.requests, args.documents), args.concurrency, args.documents
    baseline = runners.isolated(inprocess, repository, name, requests, n, f"in-process ORT (sorted batches of {n})")
    rows = [baseline]
    with running_stack(repository, args.workdir / "run", "--log-level", "warning") as stack:
        rows.append(
            served(stack.adapter_url, name, requests, c, f"served /v1/rerank: 1×{n}/req, c {c}", "/v1/rerank", False)
        )
        rows.append(triton_direct(stack.grpc_url, name, requests, c, f"Triton gRPC direct: 1×{n}/req, c {c}"))
    if args.peers == "infinity":
        from bench.peers import infinity

        with infinity(checkpoint, args.workdir / "peers", batch_size=n) as peer:
            rows.append(
                served(peer.url, peer.model, requests, c, f"infinity-emb /rerank: 1×{n}/req, c {c}", "/rerank", False)
            )
    for r in rows[1:]:
        r.tokens = baseline.tokens  # the same pairs (infinity reports no token count of its own)
    return rows, baseline


def report(rows: list[runners.Result], baseline: runners.Result) -> str:
    from bench.__main__ import table

    return table(f"Reranking: pairs/s (items/s) on {machine.describe()}", rows, baseline)


def main() -> None:
    rows, baseline = measure(parse_args())
    print(report(rows, baseline))


if __name__ == "__main__":
    main()

"""Ways to embed the same texts: the served path, Triton directly, and in-process alternatives."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Result:
    name: str
    items: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    tokens: int = 0
    peak_mb: float | None = None  # peak resident memory of the process(es) doing the work
    cpu_ms: dict[str, float] | None = None  # CPU ms per request by serving process (bench/cpu.py)
    rounds: list[float] = field(default_factory=list)  # items/s of every round when this is their median

    @property
    def requests(self) -> int:
        return len(self.latencies) + 1  # the warm-up request too

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        return float(np.percentile(self.latencies, q) * 1000)

    def row(self) -> dict[str, float | str | int]:
        return {
            "name": self.name,
            "items": self.items,
            "seconds": round(self.seconds, 3),
            "items_per_s": round(self.items_per_s, 1),
            "tokens_per_s": round(self.tokens_per_s, 1),
            "p50_ms": round(self.percentile(50), 2),
            "p99_ms": round(self.percentile(99), 2),
            "peak_mb": None if self.peak_mb is None else round(self.peak_mb),
            "cpu_ms_per_request": None if self.cpu_ms is None else {k: round(v, 3) for k, v in self.cpu_ms.items()},
            **({"rounds_items_per_s": [round(x, 1) for x in self.rounds]} if self.rounds else {}),
        }


def median_of_rounds(measures: list, rounds: int) -> list[Result]:
    """Each of `measures` (calls returning a Result) run `rounds` times, the measures alternating within a
    round; for each, the round with the median rate, carrying every round's rate."""
    runs: list[list[Result]] = [[] for _ in measures]
    for _ in range(rounds):
        for results, measure in zip(runs, measures, strict=True):
            results.append(measure())
    medians = []
    for results in runs:
        median = sorted(results, key=lambda r: r.items_per_s)[len(results) // 2]
        median.rounds = [r.items_per_s for r in results]
        medians.append(median)
    return medians


def chunks(texts: list[str], size: int) -> list[list[str]]:
    return [texts[i : i + size] for i in range(0, len(texts), size)]


async def drive(requests: list[list[str]], concurrency: int, send) -> tuple[float, list[float], int]:
    queue = list(reversed(requests))
    latencies: list[float] = []
    tokens = 0

    async def worker() -> None:
        nonlocal tokens
        while queue:
            batch = queue.pop()
            start = time.perf_counter()
            n = await send(batch)
            latencies.append(time.perf_counter() - start)
            tokens += n

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start, latencies, tokens


def served(
    url: str,
    model: str,
    inputs: list,
    per_request: int,
    concurrency: int,
    name: str,
    path: str = "/v1/embeddings",
) -> Result:
    """POST an OpenAI embeddings request per chunk of `inputs` (strings or items) with an async client.

    aiohttp rather than httpx: on 2 cores the load generator shares the CPU with the server,
    and aiohttp spends a fifth of httpx's CPU time per request (measured: 0.4–0.6 vs 2.3–2.8 ms).
    """
    import aiohttp

    async def run() -> Result:
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(300)) as client:

            async def send(batch: list) -> int:
                body = {"model": model, "input": batch, "encoding_format": "base64"}
                async with client.post(path, json=body) as r:
                    if r.status != 200:
                        raise RuntimeError(f"{url}{path} answered {r.status}: {(await r.text())[:300]}")
                    return (await r.json())["usage"]["prompt_tokens"]

            await send(inputs[:per_request])  # warm the connection
            seconds, lat, tokens = await drive(chunks(inputs, per_request), concurrency, send)
        return Result(name, len(inputs), seconds, lat, tokens)

    return asyncio.run(run())


def _served_slice(start_at: float, args: tuple) -> tuple[Result, float]:
    """One load process's share: wait for the common start, drive it, and say its own CPU seconds."""
    time.sleep(max(0.0, start_at - time.time()))
    cpu_start = time.process_time()
    result = served(*args)
    return result, time.process_time() - cpu_start


def served_by(
    processes: int, url: str, model: str, inputs: list, per_request: int, concurrency: int, name: str
) -> tuple[Result, float]:
    """`served` from `processes` load processes at once (each a share of the inputs and of the concurrency),
    so the client is not the limit of a fast server; and the load generators' CPU ms per request.
    One process: `served` in this one."""
    if processes <= 1:
        cpu_start = time.process_time()
        result = served(url, model, inputs, per_request, concurrency, name)
        return result, (time.process_time() - cpu_start) * 1000 / max(result.requests, 1)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    shares = [inputs[i::processes] for i in range(processes)]
    each = max(1, concurrency // processes)
    start_at = time.time() + 3.0  # every process has imported and connected by then
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [
            pool.submit(_served_slice, start_at, (url, model, share, per_request, each, name)) for share in shares
        ]
        parts = [f.result() for f in futures]
    results = [r for r, _ in parts]
    merged = Result(
        name,
        sum(r.items for r in results),
        max(r.seconds for r in results),
        [x for r in results for x in r.latencies],
        sum(r.tokens for r in results),
    )
    requests = sum(r.requests for r in results)
    return merged, sum(cpu_s for _, cpu_s in parts) * 1000 / max(requests, 1)


def triton_direct(
    grpc_url: str, model: str, values: list, per_request: int, concurrency: int, name: str, tensor: str = "TEXT"
) -> Result:
    """An ensemble over Triton's async gRPC client, skipping the adapter (`values`: texts or image bytes)."""
    import tritonclient.grpc.aio as grpcclient

    async def run() -> Result:
        client = grpcclient.InferenceServerClient(grpc_url)

        async def send(batch: list) -> int:
            data = np.array([[v if isinstance(v, bytes) else v.encode()] for v in batch], dtype=np.object_)
            inp = grpcclient.InferInput(tensor, list(data.shape), "BYTES")
            inp.set_data_from_numpy(data)
            r = await client.infer(model, [inp])
            return int(r.as_numpy("TOKEN_COUNT").sum())

        await send(values[:per_request])
        seconds, lat, tokens = await drive(chunks(values, per_request), concurrency, send)
        await client.close()
        return Result(name, len(values), seconds, lat, tokens)

    return asyncio.run(run())


def preprocessor(model_dir: Path):
    """The tokenizer and sequence layout a `<model>_preprocess` folder's config names, as Triton loads them."""
    from google.protobuf import json_format

    from contract import TextParams, parameters
    from export.repository import parse_config
    from runtime.text import TextLayout, load_tokenizer

    config = json_format.MessageToDict(parse_config(model_dir / "config.pbtxt"), preserving_proto_field_name=True)
    params = TextParams.from_parameters(parameters(config))
    return load_tokenizer(str(model_dir / "1" / params.tokenizer)), TextLayout.of(params)


def sorted_batches(repository: Path, model: str, texts: list[str], batch: int, name: str, embed) -> Result:
    """`embed(input_ids, attention_mask)` over `texts` tokenised as the model's preprocessor does, in
    batches sorted by length, each padded to its longest row (as `padding=True` does), in this process."""
    from runtime.text import encode, frame_all, pad

    tok, layout = preprocessor(repository / f"{model}_preprocess")

    def run(texts: list[str]) -> Result:
        start = time.perf_counter()
        rows = frame_all(encode(tok, texts), layout, "END")
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        latencies = []
        for i in range(0, len(order), batch):
            t0 = time.perf_counter()
            b = pad([rows[j] for j in order[i : i + batch]], layout)
            width = int(b.attention_mask.sum(axis=1).max())
            embed(b.input_ids[:, :width], b.attention_mask[:, :width])
            latencies.append(time.perf_counter() - t0)
        seconds = time.perf_counter() - start
        return Result(name, len(texts), seconds, latencies, sum(len(r) for r in rows))

    run(texts[: batch * 2])  # warm-up: first calls allocate and pick kernels
    return run(texts)


def onnx_inprocess(
    repository: Path,
    model: str,
    texts: list[str],
    batch: int,
    name: str,
    runtime: str = "onnxruntime",
    dtype: str = "float32",
) -> Result:
    """The exported fp32 ONNX graph (a `local` export in `repository`), in this process: ONNX Runtime
    (spinning, every core), or OpenVINO in `dtype` (every core)."""
    from runtime.onnx_encoder import open_onnx, open_session

    path = str(repository / f"{model}_encoder" / "1" / "model.onnx")
    session = open_session(path) if runtime == "onnxruntime" else open_onnx(path, runtime, dtype)

    def embed(ids, mask):
        return session.run(None, {"input_ids": ids, "attention_mask": mask})

    return sorted_batches(repository, model, texts, batch, name, embed)


def torch_inprocess(
    checkpoint: Path, repository: Path, model: str, texts: list[str], batch: int, name: str, dtype: str
) -> Result:
    """The family's PyTorch graph, as the `torch` target's host builds it (fp32 weights; `bfloat16`: bf16
    matrix products under CPU autocast), in this process."""
    import torch

    from export.request import ExportRequest
    from export.torch_graphs import load_graphs
    from runtime.torch_session import cast_for_autocast

    p = ExportRequest(checkpoint, repository, model).plan()
    graph = load_graphs(p.transformer_dir, p.family, p.graph_settings, p.attention, "float32", ("text",))["text"]
    if dtype == "bfloat16":
        cast_for_autocast(graph)  # as the served host runs it

    def embed(ids, mask):
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=dtype == "bfloat16"):
            return graph(torch.from_numpy(ids), torch.from_numpy(mask)).float().numpy()

    return sorted_batches(repository, model, texts, batch, name, embed)


def sentence_transformers_inprocess(checkpoint, texts: list[str], batch: int, name: str) -> Result:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(checkpoint), device="cpu")
    model.encode(texts[: batch * 2], batch_size=batch)  # warm-up
    start = time.perf_counter()
    model.encode(texts, batch_size=batch, normalize_embeddings=True)
    seconds = time.perf_counter() - start
    tokens = sum(min(len(ids), model.max_seq_length) for ids in model.tokenizer(texts)["input_ids"])
    return Result(name, len(texts), seconds, [], tokens)


def isolated(runner, *args) -> Result:
    """Run an in-process runner in a fresh process, so its peak memory is its own."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_measured, runner, *args).result()


def _measured(runner, *args) -> Result:
    from bench.memory import own_peak_mb

    result = runner(*args)
    result.peak_mb = own_peak_mb()
    return result

"""`python -m bench.abuse`: each attack of issues 22 and 32 at the configured limits, with an honest
stream beside it.

A supervised stack serves all-MiniLM-L6-v2, a tiny CLIP and a tiny cross-encoder; a loopback server
plays the allowed image host. For each attack, run for `--seconds`: the attack itself, an honest stream
(4 workers, one short query each), and `/health` polled every 20 ms. Printed per attack: the adapter's
and Triton's (server and Python stubs together) peak RSS, `/health` p50/p99, and the honest requests by
outcome. Goals: each RSS under 512 MiB above its idle level for Triton, `/health` p99 under 50 ms, no
honest request lost but to a 429 the in-flight bound promises. All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import gzip
import http.server
import io
import multiprocessing
import socket
import statistics
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path

import httpx
from PIL import Image

from bench import costs
from bench.machine import describe
from bench.memory import reset_peaks, tree_peak_mb
from bench.soak import rss_mb
from export.build import Progress, export
from export.request import ExportRequest
from launcher import default_model
from launcher.processes import free_port, start_adapter, stop, wait_http
from launcher.stack import running_stack

TEXT, IMAGE, RERANK = "all-MiniLM-L6-v2", "clip", "reranker"
MIB = 1024 * 1024


def png(side: int, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (side, side)).save(buf, "PNG")
    return buf.getvalue()


class Images(http.server.BaseHTTPRequestHandler):
    """The allowed image host: a real image, a gzip bomb, a large image, a lying Content-Length."""

    bodies: dict[str, tuple[bytes, dict[str, str]]] = {}

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body, headers = self.bodies.get(self.path, (b"", {}))
        self.send_response(200 if body else 404)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", headers.get("X-Length", str(len(body))))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass

    def log_message(self, *args) -> None:
        pass


def image_host() -> tuple[str, http.server.ThreadingHTTPServer]:
    Images.bodies = {
        "/cat.png": (png(64), {}),
        "/big.png": (png(1024) + b"\0" * (4 * MIB), {}),  # 4 MiB on the wire
        "/gzip": (gzip.compress(b"\0" * (256 * MIB)), {"Content-Encoding": "gzip"}),  # 255 KiB → 256 MiB
        "/lying": (b"x" * 1024, {"X-Length": str(10**9)}),
    }
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Images)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


def trickle(url: str, head: bytes, count: int, stop: threading.Event) -> None:
    """`count` connections that send `head` and then one byte a second; a cut one is opened again, so
    the attack keeps its pressure."""
    host, port = url.removeprefix("http://").split(":")

    def top_up(conns: list[socket.socket]) -> list[socket.socket]:
        while len(conns) < count:
            try:
                conn = socket.create_connection((host, int(port)), timeout=2)
                conn.sendall(head)
            except OSError:
                break
            conns.append(conn)
        return conns

    conns = top_up([])
    while not stop.wait(1.0):
        alive = []
        for conn in conns:
            try:
                conn.sendall(b" ")
                alive.append(conn)
            except OSError:
                conn.close()
        conns = top_up(alive)
    for conn in conns:
        conn.close()


def chunked_flood(url: str, stop: threading.Event) -> None:
    host, port = url.removeprefix("http://").split(":")
    chunk = b"x" * 65536
    while not stop.is_set():
        try:
            with socket.create_connection((host, int(port)), timeout=5) as conn:
                conn.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n")
                conn.sendall(b"Transfer-Encoding: chunked\r\n\r\n")
                while not stop.is_set():
                    conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            pass


async def post_loop(
    client: httpx.AsyncClient, url: str, body: bytes, stop: asyncio.Event, workers: int, host: str | None = None
) -> None:
    headers = {"Content-Type": "application/json", **({"Host": host} if host else {})}

    async def one() -> None:
        while not stop.is_set():
            try:
                await client.post(url, content=body, headers=headers, timeout=60)
            except httpx.HTTPError:
                await asyncio.sleep(0.05)

    await asyncio.gather(*(one() for _ in range(workers)))


def attacks(adapter: str, images: str) -> dict[str, Callable]:
    """Name → a function (client, stop) returning a coroutine that attacks until `stop` is set."""

    def body(obj) -> bytes:
        import orjson

        return orjson.dumps(obj)

    def threaded(target, *args):
        async def run(_client, stop: asyncio.Event) -> None:
            flag = threading.Event()
            thread = threading.Thread(target=target, args=(*args, flag), daemon=True)
            thread.start()
            await stop.wait()
            flag.set()
            await asyncio.to_thread(thread.join, 10)

        return run

    def posting(payload: bytes, workers: int, path: str = "/v1/embeddings", host: str | None = None):
        return lambda client, stop: post_loop(client, f"{adapter}{path}", payload, stop, workers, host)

    def storm(path: str):
        async def run(client: httpx.AsyncClient, stop: asyncio.Event) -> None:
            async def one() -> None:
                while not stop.is_set():
                    await client.get(f"{adapter}{path}")

            await asyncio.gather(*(one() for _ in range(64)))

        return run

    ready_storm, health_storm = storm("/health/ready"), storm("/health")

    head = b"POST /v1/embeddings HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
    slow_body = head + b"Content-Length: 4096\r\n\r\n{"
    idle_declaration = head + b"Content-Length: 2097152\r\n\r\n"

    def inline(data: bytes, kind: str = "png") -> str:
        return f"data:image/{kind};base64," + base64.b64encode(data).decode()

    bomb = inline(png(7000, "1"))
    thin = inline(costs.png(16384, 1))
    scans = inline(costs.many_scans_jpeg(4096, 3000), "jpeg")
    chunks = inline(costs.many_chunks_png(1_400_000))
    query = "🚀" * 8192
    return {
        "slow bodies (64 connections)": threaded(trickle, adapter, slow_body, 64),
        "unfinished headers (64 connections)": threaded(trickle, adapter, b"POST /v1/embeddings HTTP/1.1\r\n", 64),
        "2 MiB body of 524k items": posting(b'{"input": [' + b'"",' * 524_282 + b'""]}', 4),
        "2 MiB body of ints (one id list, at the cap)": posting(b'{"input": [' + b"7," * (MIB - 10) + b"7]}", 2),
        "endless chunked bodies": threaded(chunked_flood, adapter),
        "gzip-bomb image URLs (64 per request)": posting(
            body({"model": IMAGE, "input": [{"image": f"{images}/gzip"}] * 64}), 4
        ),
        "4 MiB image URLs (64 per request)": posting(
            body({"model": IMAGE, "input": [{"image": f"{images}/big.png"}] * 64}), 4
        ),
        "lying Content-Length image URLs": posting(
            body({"model": IMAGE, "input": [{"image": f"{images}/lying"}] * 64}), 4
        ),
        "decode bombs (64 PNGs of 7000², 5 KiB each)": posting(
            body({"model": IMAGE, "input": [{"image": bomb}] * 64}), 2
        ),
        "1 MiB texts": posting(body({"model": TEXT, "input": ["word " * 200_000]}), 4),
        # issue 32
        "1. thin PNGs (16384×1, 64 per request)": posting(body({"model": IMAGE, "input": [{"image": thin}] * 64}), 2),
        "2. escaped quotes + 2,200 [ (2 MiB, not JSON)": posting(costs.escaped_quotes(2 * MIB - 4096), 4),
        "3. progressive JPEGs of 3,000 scans (12 per request)": posting(
            body({"model": IMAGE, "input": [{"image": scans}] * 12}), 2
        ),
        "3. PNGs of 116k empty chunks (1 per request)": posting(
            body({"model": IMAGE, "input": [{"image": chunks}]}), 2
        ),
        "4. sparse 1 MiB texts (spaces, then a word)": posting(body({"model": TEXT, "input": [costs.spaces(MIB)]}), 4),
        "5. rerank: 8,192-emoji query × 1,000 documents": posting(
            body({"model": RERANK, "query": query, "documents": ["a"] * 1000}), 4, "/v1/rerank"
        ),
        "5. rerank: the budget's query (2 KiB) × 1,000 documents": posting(
            body({"model": RERANK, "query": query[:524], "documents": ["a"] * 1000}), 2, "/v1/rerank"
        ),
        "6. idle 2 MiB declarations (32 connections)": threaded(trickle, adapter, idle_declaration, 32),
        "14. a rebound Host name (rebind.evil.example)": posting(body({"input": "x"}), 4, host="rebind.evil.example"),
        "readiness storm (64 loops)": ready_storm,
        "liveness storm (64 loops, for comparison)": health_storm,
    }


def probe_health(url: str, done, results) -> None:
    """`GET url` every 20 ms until `done`; the latencies (ms) go to `results`."""
    latencies = []
    with httpx.Client(timeout=10) as client:
        while not done.is_set():
            start = time.perf_counter()
            client.get(url)
            latencies.append((time.perf_counter() - start) * 1000)
            time.sleep(0.02)
    results.put(latencies)


async def measure(adapter: str, pid: int, attack, seconds: float) -> dict:
    stop = asyncio.Event()
    health: list[float] = []
    honest: collections.Counter = collections.Counter()
    peak = rss_mb(pid)
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    async with httpx.AsyncClient(timeout=60, limits=limits) as attacker, httpx.AsyncClient(timeout=60) as client:

        async def honest_stream() -> None:
            async def one() -> None:
                while not stop.is_set():
                    try:
                        r = await client.post(
                            f"{adapter}/v1/embeddings", json={"model": TEXT, "input": "a short query"}
                        )
                        honest[r.status_code] += 1
                    except httpx.HTTPError as exc:
                        honest[type(exc).__name__] += 1

            await asyncio.gather(*(one() for _ in range(4)))

        async def poll_health() -> None:
            """In a process of its own: the attack's client work must not delay the probe's own loop."""
            context = multiprocessing.get_context("spawn")
            done, results = context.Event(), context.Queue()
            prober = context.Process(target=probe_health, args=(f"{adapter}/health", done, results))
            prober.start()
            await stop.wait()
            done.set()
            health.extend(await asyncio.to_thread(results.get, True, 30))
            await asyncio.to_thread(prober.join, 10)

        async def poll_rss() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, rss_mb(pid))
                await asyncio.sleep(0.05)

        async def timer() -> None:
            await asyncio.sleep(seconds)
            stop.set()

        tasks: list[Coroutine] = [attack(attacker, stop), honest_stream(), poll_health(), poll_rss(), timer()]
        await asyncio.gather(*tasks)
    health.sort()
    return {
        "rss": peak,
        "p50": statistics.median(health) if health else float("nan"),
        "p99": health[int(0.99 * (len(health) - 1))] if health else float("nan"),
        "honest": honest,
    }


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.abuse", description=__doc__)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--max-in-flight", type=int, default=16)
    ap.add_argument("--only", help="attacks whose name contains this text")
    ap.add_argument("--workdir", type=Path, default=Path("build/abuse"))
    args = ap.parse_args()
    from tests import tiny

    args.workdir.mkdir(parents=True, exist_ok=True)
    repo = args.workdir / "repo"
    if not (repo / TEXT).exists():
        export(ExportRequest(default_model.checkpoint(), repo, TEXT, hf_id=default_model.HF_ID), Progress())
        export(ExportRequest(tiny.clip(args.workdir / "clip-checkpoint"), repo, IMAGE), Progress())
    if not (repo / RERANK).exists():
        from tests.tiny.cross_encoder import bert_reranker

        export(ExportRequest(bert_reranker(args.workdir / "reranker-checkpoint"), repo, RERANK), Progress())
    images, server = image_host()
    flags = ("--max-in-flight", str(args.max_in_flight), "--image-allowed-hosts", "127.0.0.1", "--log-level", "error")
    print(f"machine: {describe()}")
    print(
        f"adapter: --max-in-flight {args.max_in_flight}, other limits at their defaults; {args.seconds:g} s per attack"
    )
    rows = []
    with running_stack(repo, args.workdir / "stack", *flags) as stack:
        names = ["none (honest stream only)", *attacks("", images)]
        for name in (n for n in names if not args.only or args.only in n or n.startswith("none")):
            # a fresh adapter per attack: its peak memory is the attack's own, not what an earlier one left
            port = free_port()
            log = args.workdir / f"adapter-{port}.log"
            adapter = start_adapter(port, stack.grpc_url, log, *flags, admin_key=stack.triton.admin_key)
            url = f"http://127.0.0.1:{port}"
            try:
                wait_http(f"{url}/health/ready", adapter)
                attack = attacks(url, images).get(name, _idle)
                reset_peaks(stack.triton.process.pid)
                result = asyncio.run(measure(url, adapter.pid, attack, args.seconds))
                result["triton"] = tree_peak_mb(stack.triton.process.pid)
                rows.append((name, result))
            finally:
                stop(adapter)
    server.shutdown()
    print()
    idle = rows[0][1]["triton"]  # the honest stream alone: what the models themselves hold
    print("| attack | adapter peak RSS MiB | Triton peak RSS MiB (+ over idle) | /health p50 / p99 ms | honest |")
    print("|---|---:|---:|---:|---|")
    for name, r in rows:
        outcome = ", ".join(f"{k}: {v}" for k, v in sorted(r["honest"].items(), key=lambda kv: str(kv[0])))
        triton = f"{r['triton']:.0f} (+{r['triton'] - idle:.0f})"
        print(f"| {name} | {r['rss']:.0f} | {triton} | {r['p50']:.1f} / {r['p99']:.1f} | {outcome} |")
    lost = [n for n, r in rows if any(k not in (200, 429) for k in r["honest"])]
    rss_met = all(r["rss"] < 512 and r["triton"] - idle < 512 for _, r in rows)
    print()
    print(
        f"goals: RSS < 512 MiB (adapter; Triton over idle): {'met' if rss_met else 'NOT met'}; "
        f"/health p99 < 50 ms: {'met' if all(r['p99'] < 50 for _, r in rows) else 'NOT met'}; "
        f"honest requests lost (not 200 or 429): {', '.join(lost) or 'none'}"
    )


async def _idle(_client, stop: asyncio.Event) -> None:
    await stop.wait()


if __name__ == "__main__":
    main()

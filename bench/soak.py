"""`python -m bench.soak`: a long mixed load with bad requests, memory readings and faults (not a test).

Three phases against a supervised stack serving all-MiniLM-L6-v2 and a tiny CLIP (the image share):
1. soak: N requests at concurrency C, 10 % of them bad; every good one must get a 200 and every bad
   one its 4xx, with no 5xx; resident memory of every process after a warm-up and at the end.
2. faults: a stream of good requests while the encoder's Python stub is killed (SIGKILL), then while
   tritonserver itself is killed and the supervisor starts it again; the adapter is never restarted.
   Reports the failures by status, when the last one came, and readiness every 0.25 s.
3. replicas: two tritonservers behind one adapter (`ipv4:a,b`), one killed during the stream.
Afterwards no Python-backend region of ours may remain in /dev/shm.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import itertools
import os
import platform
import random
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.workloads import images, texts
from launcher import default_model
from launcher.shm import REGION_PREFIX, SHM, stubs_of
from launcher.stack import running_replicas, running_stack

TEXT, IMAGE = "all-MiniLM-L6-v2", "clip"


@dataclass(frozen=True)
class Call:
    kind: str
    body: dict
    expected: int  # 200, or the 4xx a bad request must get


def mix(n: int, seed: int = 0) -> list[Call]:
    """Seeded requests: single texts, batches of 32, token ids, images as data URIs, and 10 % bad ones."""
    rng = random.Random(seed)
    words = texts(256, 3, 60, seed=seed)
    pictures = [f"data:image/png;base64,{base64.b64encode(b).decode()}" for b in images(16, smallest=16, largest=96)]
    not_an_image = base64.b64encode(b"not a png").decode()
    good = [
        (40, lambda: Call("text", {"model": TEXT, "input": rng.choice(words)}, 200)),
        (10, lambda: Call("batch32", {"model": TEXT, "input": rng.sample(words, 32)}, 200)),
        (15, lambda: Call("token ids", {"model": TEXT, "input": [[101, *rng.sample(range(1000, 5000), 8), 102]]}, 200)),
        (25, lambda: Call("image", {"model": IMAGE, "input": [{"image": rng.choice(pictures)}, "a photo"]}, 200)),
    ]
    bad = [
        lambda: Call("bad: empty", {"model": TEXT, "input": ["ok", ""]}, 400),
        lambda: Call("bad: unknown model", {"model": "no-such-model", "input": "x"}, 404),
        lambda: Call("bad: token id", {"model": TEXT, "input": [[101, 10**7]]}, 400),
        lambda: Call("bad: image", {"model": IMAGE, "input": [{"image": not_an_image}]}, 400),
        lambda: Call("bad: too long", {"model": TEXT, "input": "word " * 600, "truncate": "NONE"}, 400),
    ]
    weights = [w for w, _ in good]
    return [
        rng.choice(bad)() if rng.random() < 0.10 else rng.choices([m for _, m in good], weights)[0]() for _ in range(n)
    ]


@dataclass
class Tally:
    by_kind: collections.Counter = field(default_factory=collections.Counter)
    wrong: list[tuple[str, int, int]] = field(default_factory=list)  # (kind, expected, got)
    failed_at: list[float] = field(default_factory=list)
    last_failure: float = 0.0


async def drive(url: str, calls, concurrency: int, tally: Tally, on_done=None) -> float:
    """Send `calls` (a list or an iterator) at `concurrency`; returns the wall time."""
    queue = iter(enumerate(calls))
    start = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:

        async def worker() -> None:
            for i, call in queue:
                try:
                    status = (await client.post("/v1/embeddings", json=call.body)).status_code
                except httpx.HTTPError:
                    status = 0  # no answer at all
                tally.by_kind[(call.kind, status)] += 1
                if status != call.expected:
                    tally.wrong.append((call.kind, call.expected, status))
                    tally.failed_at.append(time.monotonic())
                if on_done is not None:
                    await on_done(i)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.monotonic() - start


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def processes(stack) -> dict[str, int]:
    """Name → pid of every serving process: tritonserver, each stub, the adapter."""
    triton = stack.triton.process.pid
    named = {"tritonserver": triton, "adapter": stack.adapter.pid}
    for stub in stubs_of(triton).values():
        named[f"stub {stub.model}"] = stub.pid
    return named


def our_regions(before: set[str]) -> list[str]:
    return sorted({p.name for p in SHM.glob(f"{REGION_PREFIX}*")} - before)


def summary(tally: Tally) -> str:
    rows = sorted(tally.by_kind.items())
    return "\n".join(f"  {kind:<20} {status:>3}: {n}" for (kind, status), n in rows)


def phase_soak(stack, n: int, concurrency: int) -> None:
    calls = mix(n)
    tally, memory = Tally(), {}

    async def snapshot(i: int) -> None:
        if i == min(1000, n // 2):
            memory["warm"] = {k: rss_mb(p) for k, p in processes(stack).items()}

    seconds = asyncio.run(drive(stack.adapter_url, calls, concurrency, tally, snapshot))
    memory["end"] = {k: rss_mb(p) for k, p in processes(stack).items()}
    fivexx = sum(c for (_, s), c in tally.by_kind.items() if s >= 500 or s == 0)
    print(f"\n## 1. soak: {n} requests at concurrency {concurrency}, {seconds:.0f} s ({n / seconds:.0f} requests/s)")
    print(summary(tally))
    print(f"  unexpected statuses: {len(tally.wrong)}; 5xx or no answer: {fivexx}")
    print("\n  resident memory (MB)   after warm-up      end   growth")
    for name, warm in memory["warm"].items():
        end = memory["end"].get(name, 0.0)
        print(f"  {name:<34} {warm:8.1f} {end:8.1f} {100 * (end - warm) / max(warm, 1e-9):+7.1f} %")


def ready(url: str) -> int:
    try:
        return httpx.get(f"{url}/health/ready", timeout=30).status_code
    except httpx.HTTPError:
        return 0


def phase_faults(stack, seconds: float, concurrency: int) -> None:
    """A stream of good requests for `seconds`; at 3 s the encoder's stub, later tritonserver, is killed."""
    url = stack.adapter_url
    pool = [c for c in mix(2000, seed=7) if c.expected == 200 and c.kind != "batch32"]
    for fault in ("kill -9 of the encoder's Python stub", "kill -9 of tritonserver"):
        tally, readiness, fired = Tally(), [], {}

        async def run(fault=fault, tally=tally, readiness=readiness, fired=fired) -> float:
            deadline = time.monotonic() + seconds
            stream = itertools.takewhile(lambda _: time.monotonic() < deadline, itertools.cycle(pool))
            sending = asyncio.create_task(drive(url, stream, concurrency, tally))
            await asyncio.sleep(3)
            server = stack.triton.process.pid
            encoder = next(s.pid for s in stubs_of(server).values() if s.model == f"{TEXT}_encoder")
            os.kill(encoder if "stub" in fault else server, signal.SIGKILL)
            fired["at"] = time.monotonic()
            async with httpx.AsyncClient(timeout=30) as client:
                while not sending.done():
                    try:
                        readiness.append((await client.get(f"{url}/health/ready")).status_code)
                    except httpx.HTTPError:
                        readiness.append(0)
                    await asyncio.sleep(0.25)
            return await sending

        elapsed = asyncio.run(run())
        statuses = collections.Counter(got for _, _, got in tally.wrong)
        last = max(tally.failed_at) - fired["at"] if tally.failed_at else 0.0
        sent = sum(tally.by_kind.values())
        print(f"\n## 2. {fault}, during {elapsed:.0f} s of good requests at concurrency {concurrency} ({sent} sent)")
        print(
            f"  failed: {len(tally.wrong)} ({dict(statuses) or 'none'}); the last failure "
            f"{last:.1f} s after the fault, then every request succeeded"
        )
        print(f"  /health/ready every 0.25 s from the fault: {compress(readiness)}; after: {ready(url)}")
        print(f"  supervisor: {'; '.join(stack.supervisor.events[-2:]) or 'nothing'}")


def compress(values: list[int]) -> str:
    out: list[list[int]] = []
    for v in values:
        if out and out[-1][0] == v:
            out[-1][1] += 1
        else:
            out.append([v, 1])
    return " → ".join(f"{v}×{k}" for v, k in out) or "not sampled"


def phase_replicas(repository: Path, workdir: Path, n: int, concurrency: int) -> None:
    with running_replicas(repository, workdir) as replicas:
        calls = [c for c in mix(n, seed=11) if c.expected == 200]
        tally = Tally()

        async def kill(i: int) -> None:
            if i == n // 3:
                os.killpg(replicas.servers[1].process.pid, signal.SIGKILL)

        seconds = asyncio.run(drive(replicas.adapter_url, calls, concurrency, tally, kill))
        print(
            f"\n## 3. two replicas, one killed (SIGKILL) a third of the way through {len(calls)} good requests "
            f"({seconds:.0f} s)"
        )
        print(f"  lost: {len(tally.wrong)} {collections.Counter(g for _, _, g in tally.wrong) or ''}")


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--fault-seconds", type=float, default=30.0)
    ap.add_argument("--replica-requests", type=int, default=2_000)
    ap.add_argument("--workdir", type=Path, default=Path("build/soak"))
    ap.add_argument("--phases", default="soak,faults,replicas", help="which phases to run, comma-separated")
    args = ap.parse_args()

    from export.build import Progress, export
    from export.request import ExportRequest
    from tests import tiny

    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "?")
    flags = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16") if f in cpu]
    print(f"# soak on {model} ({', '.join(flags)}), {os.cpu_count()} cores, {platform.python_version()}")
    before = {p.name for p in SHM.glob(f"{REGION_PREFIX}*")}
    repo = args.workdir / "repo"
    if not (repo / TEXT / "config.pbtxt").exists():
        export(ExportRequest(default_model.checkpoint(), repo, TEXT, hf_id=default_model.HF_ID), Progress())
        export(ExportRequest(tiny.clip(args.workdir / "clip-checkpoint"), repo, IMAGE), Progress())
    phases = set(args.phases.split(","))
    if phases & {"soak", "faults"}:
        with running_stack(repo, args.workdir / "stack", "--log-level", "warning") as stack:
            stack.supervisor.restart = True  # as a container's restart policy would
            if "soak" in phases:
                phase_soak(stack, args.requests, args.concurrency)
            if "faults" in phases:
                phase_faults(stack, args.fault_seconds, args.concurrency)
    if "replicas" in phases:
        phase_replicas(repo, args.workdir, args.replica_requests, args.concurrency)
    left = our_regions(before)
    print(f"\nPython-backend regions of ours left in /dev/shm: {len(left)} {left or ''}")


if __name__ == "__main__":
    main()

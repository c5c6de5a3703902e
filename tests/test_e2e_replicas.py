"""The adapter against several Triton replicas behind one address, as behind a headless Service.

Two tritonservers listen on the same gRPC port of two loopback addresses; the adapter gets
both as one target (`ipv4:a:port,b:port`, what a headless Service's DNS name resolves to)
and must spread calls over both, and keep serving when one goes away.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import tritonclient.http as httpclient

from launcher.processes import free_port, start_adapter, stop, wait_http
from launcher.shm import SHM, stubs_of
from launcher.tritonserver import TritonPorts, TritonServer

MODEL = "all-MiniLM-L6-v2"


def successes(triton: TritonServer) -> int:
    stats = httpclient.InferenceServerClient(triton.http_url).get_inference_statistics(MODEL)
    return stats["model_stats"][0]["inference_stats"]["success"]["count"]


def test_adapter_spreads_calls_over_replicas_and_survives_losing_one(minilm_repository, tmp_path) -> None:
    repo, _ = minilm_repository
    grpc = free_port()
    replicas = [
        TritonServer(repo, tmp_path / f"triton-{i}", TritonPorts(free_port(), grpc, free_port()), address=address)
        for i, address in enumerate(("127.0.0.1", "127.0.0.2"))
    ]
    adapter = None
    try:
        for t in replicas:
            t.start()
        for t in replicas:
            t.wait_ready(240)
        port = free_port()
        target = f"ipv4:127.0.0.1:{grpc},127.0.0.2:{grpc}"
        adapter = start_adapter(port, target, tmp_path / "adapter.log", "--log-level", "warning")
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health/ready", adapter)
        before = [successes(t) for t in replicas]
        with httpx.Client(base_url=url, timeout=30) as client:
            for i in range(20):
                r = client.post("/v1/embeddings", json={"model": MODEL, "input": f"request {i}"})
                assert r.status_code == 200, r.text
            gained = [successes(t) - b for t, b in zip(replicas, before, strict=True)]
            assert sum(gained) >= 20
            assert min(gained) >= 5, f"calls not spread over the replicas: {gained}"

            # Kill one replica outright during a stream of requests: each call lost with it is retried once,
            # and round robin sends the retry to the other replica, so no request fails.
            statuses: list[int] = []

            def stream() -> None:
                with httpx.Client(base_url=url, timeout=30) as own:
                    for i in range(60):
                        statuses.append(own.post("/v1/embeddings", json={"model": MODEL, "input": f"s{i}"}).status_code)

            sender = threading.Thread(target=stream)
            sender.start()
            time.sleep(0.5)
            killed_regions = [stub.region for stub in stubs_of(replicas[1].process.pid).values()]
            os.killpg(replicas[1].process.pid, signal.SIGKILL)
            sender.join()
            assert len(statuses) == 60 and set(statuses) == {200}, statuses
            for i in range(10):
                r = client.post("/v1/embeddings", json={"model": MODEL, "input": f"after {i}"})
                assert r.status_code == 200, r.text
    finally:
        stop(adapter)
        for t in replicas:
            t.stop()
    assert killed_regions and not any((SHM / r).exists() for r in killed_regions)  # swept by stop()

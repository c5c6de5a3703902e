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

from contract import ADMIN_HEADER
from launcher.shm import SHM, stubs_of
from launcher.stack import running_replicas
from launcher.tritonserver import TritonServer

MODEL = "all-MiniLM-L6-v2"


def successes(triton: TritonServer) -> int:
    stats = httpclient.InferenceServerClient(triton.http_url).get_inference_statistics(
        MODEL, headers={ADMIN_HEADER: triton.admin_key}
    )
    return stats["model_stats"][0]["inference_stats"]["success"]["count"]


def test_adapter_spreads_calls_over_replicas_and_survives_losing_one(minilm_repository, tmp_path) -> None:
    addresses = ("127.0.0.1", "127.0.0.2")
    with running_replicas(minilm_repository[0], tmp_path, addresses, "--log-level", "warning") as stack:
        replicas, url = stack.servers, stack.adapter_url
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
    assert killed_regions and not any((SHM / r).exists() for r in killed_regions)  # swept by stop()

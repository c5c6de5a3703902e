"""Triton's queues are bounded and the adapter's deadline reaches them (issue 22, item 19), on real Triton."""

from __future__ import annotations

import asyncio
import shutil

import httpx
import numpy as np
import pytest
import tritonclient.grpc.aio as grpcclient

from launcher import default_model
from launcher.stack import running_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def small_queue_stack(minilm_repository, tmp_path_factory):
    """The default model with room for 2 requests in the preprocessor's queue, and no coalescing in the
    adapter, so that concurrent requests meet the queue as tritonclient users' would."""
    repo = tmp_path_factory.mktemp("small-queue") / "repo"
    shutil.copytree(minilm_repository[0], repo)
    config = repo / f"{default_model.NAME}_preprocess" / "config.pbtxt"
    text = config.read_text()
    assert "max_queue_size: 256" in text
    config.write_text(text.replace("max_queue_size: 256", "max_queue_size: 2"))
    with running_stack(repo, tmp_path_factory.mktemp("small-queue-stack"), "--coalesce", "false") as stack:
        yield stack


def test_a_full_queue_is_503_with_retry_after_never_a_hang(small_queue_stack) -> None:
    long_text = "the quick brown fox jumps over the lazy dog " * 40

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.post(f"{small_queue_stack.adapter_url}/v1/embeddings", json={"input": [long_text] * 8})
                    for _ in range(48)
                )
            )

    answers = asyncio.run(burst())
    codes = sorted({r.status_code for r in answers})
    assert set(codes) <= {200, 503} and 503 in codes, codes
    for r in answers:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "1" and r.json()["error"]["type"] == "service_unavailable"
    after = httpx.post(f"{small_queue_stack.adapter_url}/v1/embeddings", json={"input": "fine"}, timeout=30)
    assert after.status_code == 200


def test_a_request_past_its_deadline_is_dropped_from_the_queue(small_queue_stack) -> None:
    """The deadline a caller passes reaches the ensemble's steps: queued past it, a request is rejected
    instead of running for nobody."""
    long_text = "the quick brown fox jumps over the lazy dog " * 40

    async def run() -> list[str]:
        client = grpcclient.InferenceServerClient(small_queue_stack.grpc_url)
        try:

            async def call(timeout_us: int) -> str:
                data = np.array([[long_text.encode()]] * 32, dtype=np.object_)
                inputs = [grpcclient.InferInput("TEXT", list(data.shape), "BYTES")]
                inputs[0].set_data_from_numpy(data)
                try:
                    await client.infer(default_model.NAME, inputs, timeout=timeout_us, client_timeout=30)
                except Exception as exc:  # noqa: BLE001 -- the error text is what the test reads
                    return str(exc)
                return "ok"

            busy = [asyncio.ensure_future(call(30_000_000)) for _ in range(2)]
            await asyncio.sleep(0.05)
            late = await call(1)  # 1 µs: expired while the busy ones run
            return [late, *await asyncio.gather(*busy)]
        finally:
            await client.close()

    late, *busy = asyncio.run(run())
    assert "Request timeout expired" in late, late
    assert busy == ["ok", "ok"], busy

"""`python -m bench.latency`: where one short query's time goes, step by step, on one warm stack.

Prints the p50 of sequential single-query calls to in-process ONNX Runtime, the adapter's
`/health` (the HTTP floor), each Triton step alone, the ensemble over gRPC and the adapter's
`/v1/embeddings`, so the overhead of each layer is the difference of two adjacent lines.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import tritonclient.grpc as grpcclient

from export.build import Progress, export
from export.request import ExportRequest
from launcher import default_model
from launcher.stack import running_stack
from runtime.onnx_encoder import open_session

ROOT = Path(__file__).resolve().parent.parent
QUERY = "how do I bake bread at home quickly"


def p50(call: Callable[[], object], n: int = 150) -> float:
    for _ in range(10):
        call()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def text_input(text: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[text.encode()]], dtype=np.object_))
    return tensor


def main() -> None:
    work = ROOT / "build" / "latency"
    repo = work / "repository"
    if not (repo / "m" / "config.pbtxt").exists():
        export(ExportRequest(checkpoint=default_model.checkpoint(), repository=repo, name="m"), Progress())
    with running_stack(repo, work / "run", "--log-level", "warning") as stack:
        url = stack.adapter_url
        client = grpcclient.InferenceServerClient(stack.grpc_url)
        pre = client.infer("m_preprocess", [text_input(QUERY)])
        ids, mask = pre.as_numpy("input_ids"), pre.as_numpy("attention_mask")

        def encoder() -> None:
            inputs = []
            for name, array in (("input_ids", ids), ("attention_mask", mask)):
                inputs.append(grpcclient.InferInput(name, list(array.shape), "INT64"))
                inputs[-1].set_data_from_numpy(array)
            client.infer("m_encoder", inputs)

        session = open_session(str(repo / "m_encoder" / "1" / "model.onnx"))
        http = httpx.Client()
        steps = [
            ("in-process ONNX Runtime", lambda: session.run(None, {"input_ids": ids, "attention_mask": mask})),
            ("adapter GET /health (HTTP floor)", lambda: http.get(f"{url}/health").raise_for_status()),
            ("Triton m_preprocess alone", lambda: client.infer("m_preprocess", [text_input(QUERY)])),
            ("Triton m_encoder alone", encoder),
            ("Triton ensemble over gRPC", lambda: client.infer("m", [text_input(QUERY)])),
            (
                "adapter POST /v1/embeddings",
                lambda: http.post(f"{url}/v1/embeddings", json={"input": QUERY}).raise_for_status(),
            ),
        ]
        for name, call in steps:
            print(f"{name:36} p50 {p50(call):6.2f} ms", flush=True)


if __name__ == "__main__":
    main()

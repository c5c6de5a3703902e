"""Shared fixtures: an exported default model and a running Triton + adapter stack."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from export.build import ExportResult, Progress, export
from export.request import ExportRequest
from launcher import default_model
from launcher.processes import free_port
from launcher.stack import Stack, running_stack

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Starlette's TestClient sends `Host: testserver`; the adapter answers only to names it is known by
# (client/hosts.py), and tests of that set the list themselves.
os.environ.setdefault("EMBED_ALLOWED_HOSTS", "testserver")


# The engine targets the e2e parity tests run on, each with the module's fixture serving it: the `local`
# ONNX Runtime host, and the `torch` target's PyTorch graph (both on the CPU here).
SERVED_TARGETS = {"local": "stack", "torch": "torch_stack"}


def target_stack(serve: Callable[..., Iterator[Stack]], source: str, target: str):
    """A module's stack fixture on `target`: `serve(<the fixture named source>, tmp_path_factory, target)`.
    `stack = target_stack(serve, "checkpoint", "local")` and `torch_stack = … "torch")` in a module give
    its `served` fixture both targets."""

    @pytest.fixture(scope="module")
    def fixture(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
        yield from serve(request.getfixturevalue(source), tmp_path_factory, target)

    return fixture


@pytest.fixture(params=list(SERVED_TARGETS))
def served(request: pytest.FixtureRequest) -> Stack:
    """The module's `stack`, then its `torch_stack`: the same parity is asked of both targets."""
    return request.getfixturevalue(SERVED_TARGETS[request.param])


@pytest.fixture(scope="session")
def minilm_repository(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ExportResult]:
    """The embedded all-MiniLM-L6-v2 exported for the `local` target, once per session."""
    repo = tmp_path_factory.mktemp("repo")
    result = export(
        ExportRequest(
            checkpoint=default_model.checkpoint(),
            repository=repo,
            name=default_model.NAME,
            hf_id=default_model.HF_ID,
            aliases=("minilm",),
        ),
        Progress(),
    )
    return repo, result


@contextmanager
def file_server(root: Path, handler: type[http.server.SimpleHTTPRequestHandler] = http.server.SimpleHTTPRequestHandler):
    """Serve `root` over HTTP on a free loopback port; yields the base URL."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", free_port()), functools.partial(handler, directory=str(root))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@pytest.fixture(scope="session")
def gme_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GME checkpoint (random weights), for tests that only plan or generate configs."""
    from tests import tiny

    return tiny.qwen2_vl(tmp_path_factory.mktemp("gme-checkpoint") / "gme-Qwen2-VL-2B-Instruct")


@pytest.fixture(scope="session")
def minilm_stack(minilm_repository, tmp_path_factory) -> Iterator[Stack]:
    with running_stack(minilm_repository[0], tmp_path_factory.mktemp("minilm-stack")) as stack:
        yield stack


def assert_token_ids_round_trip(adapter_url: str, model: str, text: str, **fields) -> None:
    """The ids /tokenize returns for a text embed to the text's own vector, with the same usage."""
    import httpx
    import numpy as np

    tokenized = httpx.post(f"{adapter_url}/tokenize", json={"model": model, "input": text, **fields}, timeout=60)
    assert tokenized.status_code == 200, tokenized.text
    ids = tokenized.json()["tokens"][0]
    by_text = httpx.post(f"{adapter_url}/v1/embeddings", json={"model": model, "input": text, **fields}, timeout=60)
    by_ids = httpx.post(f"{adapter_url}/v1/embeddings", json={"model": model, "input": [ids]}, timeout=60)
    assert by_text.status_code == by_ids.status_code == 200, (by_text.text, by_ids.text)
    a, b = (np.array(r.json()["data"][0]["embedding"]) for r in (by_text, by_ids))
    assert float(a @ b) >= 0.99999, (model, fields, float(a @ b))
    assert by_ids.json()["usage"] == by_text.json()["usage"] == {"prompt_tokens": len(ids), "total_tokens": len(ids)}

"""Shared fixtures: an exported default model and a running Triton + adapter stack."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from export.build import ExportRequest, ExportResult, Progress, export
from launcher import default_model
from launcher.processes import free_port, start_adapter, stop, wait_http
from launcher.tritonserver import TritonPorts, TritonServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@dataclass
class Stack:
    """A running tritonserver and adapter over one model repository."""

    repository: Path
    triton: TritonServer
    adapter_url: str
    adapter_log: Path

    @property
    def grpc_url(self) -> str:
        return self.triton.grpc_url


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


def start_stack(repository: Path, workdir: Path, *adapter_args: str) -> Stack:
    ports = TritonPorts(free_port(), free_port(), free_port())
    triton = TritonServer(repository, workdir, ports)
    triton.start()
    try:
        triton.wait_ready(240)
    except Exception:
        triton.stop()
        raise
    port = free_port()
    log = workdir / "adapter.log"
    adapter = start_adapter(port, triton.grpc_url, log, *adapter_args)
    try:
        wait_http(f"http://127.0.0.1:{port}/health/ready", adapter, timeout=120)
    except Exception:
        stop(adapter)
        triton.stop()
        raise
    stack = Stack(repository, triton, f"http://127.0.0.1:{port}", log)
    stack._adapter = adapter  # type: ignore[attr-defined]
    return stack


def stop_stack(stack: Stack) -> None:
    stop(stack._adapter)  # type: ignore[attr-defined]
    stack.triton.stop()


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
def minilm_stack(minilm_repository, tmp_path_factory) -> Iterator[Stack]:
    stack = start_stack(minilm_repository[0], tmp_path_factory.mktemp("minilm-stack"))
    yield stack
    stop_stack(stack)

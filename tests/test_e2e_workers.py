"""`EMBED_WORKERS`: several adapter processes on one port, through real Triton, and their shared state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from client.app import create_app
from client.settings import Settings
from client.workers import STATE_ENV, WorkerSet
from tests.test_adapter import MODEL, FakeTriton

WORKERS = 3
KEY = "workers-key"


def workers_of(parent: int) -> list[int]:
    """The adapter's worker processes (uvicorn spawns them; multiprocessing's resource tracker is not one)."""
    found = []
    for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
        if b"resource_tracker" not in cmdline:
            found.append(int(child))
    return found


def state_of(worker: int) -> Path:
    environ = Path(f"/proc/{worker}/environ").read_bytes().split(b"\0")
    value = next(e for e in environ if e.startswith(STATE_ENV.encode() + b"="))
    return Path(value.split(b"=", 1)[1].decode())


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.fixture(scope="module")
def stack(minilm_repository, tmp_path_factory):
    from launcher.stack import running_stack

    workdir = tmp_path_factory.mktemp("workers-stack")
    with running_stack(minilm_repository[0], workdir, "--workers", str(WORKERS), "--api-key", KEY) as s:
        yield s


def post(stack, text: str, key: str | None = KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model": "all-MiniLM-L6-v2", "input": text}
    return httpx.post(f"{stack.adapter_url}/v1/embeddings", json=body, headers=headers, timeout=60)


def requests_counted(stack) -> float:
    text = httpx.get(f"{stack.adapter_url}/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("embed_requests_total{"))


@pytest.mark.e2e
def test_workers_share_the_port_the_settings_and_the_metrics(stack) -> None:
    workers = workers_of(stack.adapter.pid)
    assert len(workers) == WORKERS
    assert post(stack, "no key", key=None).status_code == 401  # the parent's flags reached every worker
    before = requests_counted(stack)
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda i: post(stack, f"text {i}").status_code, range(60)))
    assert statuses == [200] * 60
    assert requests_counted(stack) == before + 60  # whichever workers served them, one scrape sums all
    assert httpx.get(f"{stack.adapter_url}/health/ready").json()["status"] == "ready"


@pytest.mark.e2e
def test_a_killed_worker_is_replaced_and_readiness_waits_for_it(stack) -> None:
    workers = workers_of(stack.adapter.pid)
    state = state_of(workers[0])
    os.kill(workers[0], signal.SIGKILL)
    wait_for(lambda: not alive(workers[0]))
    wait_for(lambda: len(workers_of(stack.adapter.pid)) == WORKERS and workers[0] not in workers_of(stack.adapter.pid))
    wait_for(lambda: WorkerSet(state, WORKERS).ready() == WORKERS)  # the dead worker's mark is not counted
    wait_for(lambda: httpx.get(f"{stack.adapter_url}/health/ready").status_code == 200)
    assert post(stack, "after the kill").status_code == 200


@pytest.mark.e2e
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_the_workers_stop_with_the_adapter(minilm_repository, tmp_path, how) -> None:
    """SIGTERM: the supervisor stops each worker and removes the shared folder. SIGKILL (no chance to clean
    up): each worker still dies with it, and no process keeps the port."""
    from launcher.processes import free_port, start_adapter, stop, wait_http
    from launcher.stack import running_stack

    with running_stack(minilm_repository[0], tmp_path / "stack") as s:
        port = free_port()
        log = tmp_path / "adapter.log"
        adapter = start_adapter(port, s.grpc_url, log, "--workers", "2", admin_key=s.triton.admin_key)
        try:
            wait_http(f"http://127.0.0.1:{port}/health/ready", adapter, timeout=120)
            workers = workers_of(adapter.pid)
            state = state_of(workers[0])
            adapter.send_signal(how)
            adapter.wait(30)
            wait_for(lambda: not any(alive(w) for w in workers))
            if how == signal.SIGTERM:
                assert not state.exists()
        finally:
            stop(adapter)


def test_readiness_needs_every_worker(tmp_path) -> None:
    """This process marks itself at start; until the set's other worker does, the adapter is not ready.
    A mark whose process is gone does not count."""
    workers = WorkerSet(tmp_path, 2)
    with TestClient(create_app(Settings(), triton=FakeTriton([MODEL]), workers=workers)) as client:
        r = client.get("/health/ready")
        assert r.status_code == 503 and "1 of 2 adapter workers serving" in r.json()["error"]["message"]
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        (tmp_path / f"ready-{int(dead.stdout)}").touch()
        assert client.get("/health/ready").status_code == 503
        (tmp_path / f"ready-{os.getppid()}").touch()  # a live process
        assert client.get("/health/ready").status_code == 200
    assert not (tmp_path / f"ready-{os.getpid()}").exists()  # unmarked at shutdown


def test_metrics_of_several_processes_add_up(tmp_path) -> None:
    """prometheus_client's multiprocess mode, as the workers use it: counters of two processes sum in one
    scrape, and a live gauge leaves the sum when its process is marked gone."""
    script = (
        "import os, sys\n"
        "from client.metrics import Metrics\n"
        "m = Metrics()\n"
        "m.requests.labels('embeddings', 'm', '200').inc(int(sys.argv[1]))\n"
        "m.in_flight.inc()\n"
        "if sys.argv[2] == 'gone':\n"
        "    from prometheus_client import multiprocess; multiprocess.mark_process_dead(os.getpid())\n"
        "else:\n"
        "    sys.stdout.buffer.write(m.render())\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", script, "5", "gone"], env=env, check=True, cwd=Path(__file__).parent.parent)
    out = subprocess.run(
        [sys.executable, "-c", script, "7", "render"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
    ).stdout
    assert 'embed_requests_total{model="m",route="embeddings",status="200"} 12.0' in out
    assert "embed_in_flight_requests 1.0" in out  # the first process's request left with it

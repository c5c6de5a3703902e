"""`make test-compose`: the CPU compose stack for real, on a Docker Engine (marker `compose`, not in `make test`).

Builds the adapter and CPU Triton images on a stand-in base image (no registry is reachable; see
tests/docker_engine.py) exactly as a user's build would run, serves all-MiniLM-L6-v2 and a tiny CLIP
exported on the host, and checks: the same embeddings as the host-served stack, an image item,
health and metrics, two Triton replicas both taking calls, a replica stopped during a stream of
requests, and nothing of the test left after `compose down`. Traffic goes only to 127.0.0.1 and to
the test's own containers.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from launcher.processes import free_port
from tests.deploy_tools import ROOT, compose_binary

pytestmark = pytest.mark.compose
FILES = ["-f", "docker-compose.yml", "-f", "deploy/compose.cpu.yaml"]
TEXTS = ["a cat sits on the mat", "Triton serves embeddings", "Ünïcödé and 中文"]


def report(line: str) -> None:
    """Figures the README quotes; shown by pytest with -s, and kept in build/compose-report.txt."""
    print(line)
    with (ROOT / "build" / "compose-report.txt").open("a") as f:
        f.write(line + "\n")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from tests.docker_engine import EngineMissing, ensure_engine, ensure_standin

    try:
        started = ensure_engine(ROOT / "build" / "dockerd.log")
    except EngineMissing as exc:
        pytest.fail(str(exc))
    try:
        yield ensure_standin(tmp_path_factory.mktemp("standin"))
    except EngineMissing as exc:
        pytest.fail(str(exc))
    finally:
        started.stop()  # the daemon this test started, whatever happened


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    """all-MiniLM-L6-v2 and a tiny CLIP exported on the host for the `local` target, and all-MiniLM-L6-v2
    for `openvino` in bf16 (fp32 where the CPU lacks bf16), into a fresh folder."""
    from export.build import Progress, export
    from export.request import ExportRequest
    from launcher import default_model
    from tests import tiny

    repo = tmp_path_factory.mktemp("compose-repo")
    export(ExportRequest(default_model.checkpoint(), repo, "all-MiniLM-L6-v2", hf_id=default_model.HF_ID), Progress())
    export(ExportRequest(tiny.clip(tmp_path_factory.mktemp("clip") / "clip"), repo, "clip"), Progress())
    openvino = ExportRequest(default_model.checkpoint(), repo, "minilm-openvino", target="openvino", dtype="bfloat16")
    export(openvino, Progress())
    repo.chmod(0o755)
    return repo


class Compose:
    def __init__(self, project: str, env: dict[str, str]) -> None:
        self.project, self.env = project, env

    def __call__(self, *args: str, timeout: float = 900) -> str:
        command = [str(compose_binary()), "-p", self.project, *FILES, *args]
        run = subprocess.run(command, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)
        assert run.returncode == 0, f"{' '.join(args)}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
        return run.stdout

    def containers(self, service: str) -> list[dict]:
        lines = self("ps", "--format", "json", service).splitlines()
        return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture(scope="module")
def stack(engine, repository) -> Iterator[tuple[Compose, str]]:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k != "TRITON_ADMIN_KEY"},  # a newcomer's shell: no key typed
        "PYTHON_IMAGE": engine,
        "MODEL_REPOSITORY": str(repository),
        "ADAPTER_PORT": str(port),
    }
    compose = Compose(f"embedtest{os.getpid()}", env)
    start = time.monotonic()
    compose("build")
    report(f"compose build: {time.monotonic() - start:.0f} s")
    try:
        compose("up", "-d", "--wait")
        yield compose, f"http://127.0.0.1:{port}"
    finally:
        compose("down", "--volumes", "--remove-orphans")
        leftovers = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={compose.project}"],
            capture_output=True,
            text=True,
        ).stdout.split()
        networks = subprocess.run(
            ["docker", "network", "ls", "-q", "--filter", f"label=com.docker.compose.project={compose.project}"],
            capture_output=True,
            text=True,
        ).stdout.split()
        assert leftovers == [] and networks == [], (leftovers, networks)


def embed(url: str, body: dict) -> np.ndarray:
    r = httpx.post(f"{url}/v1/embeddings", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)


def test_the_compose_stack_serves_what_the_host_stack_serves(stack, repository, tmp_path) -> None:
    from launcher.stack import running_stack

    compose, url = stack
    served = embed(url, {"model": "all-MiniLM-L6-v2", "input": TEXTS})
    with running_stack(repository, tmp_path) as host:
        expected = embed(host.adapter_url, {"model": "all-MiniLM-L6-v2", "input": TEXTS})
    cosine = (served * expected).sum(axis=1)
    assert cosine.min() >= 0.99999, cosine
    report(f"compose vs host-served embeddings: min cosine {cosine.min():.7f}")
    # The image carries OpenVINO: the same model through the `openvino` target, within the bf16 gate.
    openvino = (embed(url, {"model": "minilm-openvino", "input": TEXTS}) * expected).sum(axis=1)
    assert openvino.min() >= 0.9999, openvino
    report(f"compose openvino bfloat16 vs host-served fp32: min cosine {openvino.min():.7f}")

    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 60)).save(buf, "PNG")
    image = f"data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"
    assert embed(url, {"model": "clip", "input": [{"image": image}, "a red square"]}).shape == (2, 16)
    assert httpx.get(f"{url}/health/ready", timeout=60).status_code == 200
    metrics = httpx.get(f"{url}/metrics", timeout=10)
    assert metrics.status_code == 200 and 'embed_requests_total{model="all-MiniLM-L6-v2"' in metrics.text


PROBE = """
import json, sys, urllib.error, urllib.request
def status(path, key=None):
    headers = {"triton-admin-key": key} if key else {}
    request = urllib.request.Request("http://triton:8000" + path, data=b"{}", method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
print(json.dumps([status("/v2/repository/index"), status("/v2/repository/models/x/load"),
                  status("/v2/repository/index", sys.argv[1])]))
"""


def admin_key(compose: Compose) -> str:
    """The key the admin-key service made on the first `up` (no TRITON_ADMIN_KEY was set)."""
    (adapter,) = compose.containers("adapter")
    run = subprocess.run(
        ["docker", "exec", adapter["Name"], "cat", "/keys/triton-admin-key"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0 and len(run.stdout.strip()) >= 24, run
    return run.stdout.strip()


CMDLINES = """
import pathlib
for proc in pathlib.Path("/proc").iterdir():
    try:
        line = (proc / "cmdline").read_bytes()
    except OSError:
        continue
    if b"tritonserver" in line:
        print(line.replace(bytes(1), b" ").decode(errors="replace"))
"""


def test_tritons_admin_api_answers_only_to_the_key(stack) -> None:
    """`docker compose up` with no TRITON_ADMIN_KEY set serves (the fixture), with a key of its own
    making: from another container on the compose network (the adapter's) and from the host, the
    repository API, which could load new code, is refused without the key; the adapter and supervisor
    hold it, and it is not on tritonserver's command line (issue 32, items 12 and 15)."""
    compose, url = stack
    key = admin_key(compose)
    (adapter,) = compose.containers("adapter")
    run = subprocess.run(
        ["docker", "exec", adapter["Name"], "python", "-c", PROBE, key],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == [403, 403, 200]
    (triton,) = compose.containers("triton")[:1]
    port = next(p["PublishedPort"] for p in triton["Publishers"] if p["TargetPort"] == 8000)
    assert httpx.post(f"http://127.0.0.1:{port}/v2/repository/index", timeout=10).status_code == 403
    user = subprocess.run(["docker", "exec", triton["Name"], "id", "-u"], capture_output=True, text=True, timeout=60)
    assert user.stdout.strip() not in ("", "0"), user  # not root
    lines = subprocess.run(
        ["docker", "exec", triton["Name"], "python", "-c", CMDLINES], capture_output=True, text=True, timeout=60
    )
    assert "--http-restricted-api=" in lines.stdout and key not in lines.stdout, lines
    report(
        "admin API from another container: 403 without the key, 200 with the key compose made; "
        f"not on tritonserver's command line; Triton runs as uid {user.stdout.strip()}"
    )


def successes(compose: Compose, container: dict) -> int:
    port = next(p["PublishedPort"] for p in container["Publishers"] if p["TargetPort"] == 8000)
    stats = httpx.get(
        f"http://127.0.0.1:{port}/v2/models/all-MiniLM-L6-v2/stats",
        headers={"triton-admin-key": admin_key(compose)},
        timeout=10,
    ).json()
    return stats["model_stats"][0]["inference_stats"]["success"]["count"]


def test_two_replicas_share_the_calls_and_losing_one_loses_nothing(stack) -> None:
    compose, url = stack
    compose("up", "-d", "--wait", "--scale", "triton=2")
    replicas = compose.containers("triton")
    assert len(replicas) == 2
    before = [successes(compose, r) for r in replicas]
    deadline = time.monotonic() + 60  # the adapter re-resolves `triton` at its 10 s model refresh
    gained = [0, 0]
    while min(gained) < 5 and time.monotonic() < deadline:
        for i in range(10):
            embed(url, {"model": "all-MiniLM-L6-v2", "input": f"spread {i}"})
        gained = [successes(compose, r) - b for r, b in zip(replicas, before, strict=True)]
    report(f"calls per replica after scaling to 2: {gained}")
    assert min(gained) >= 5, gained

    statuses: list[int] = []

    def stream() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            for i in range(150):
                r = client.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": f"s{i}"})
                statuses.append(r.status_code)

    sender = threading.Thread(target=stream)
    sender.start()
    time.sleep(1)
    subprocess.run(["docker", "stop", replicas[1]["Name"]], check=True, capture_output=True, timeout=120)
    sender.join()
    lost = [s for s in statuses if s != 200]
    report(f"replica stopped during {len(statuses)} requests: {len(lost)} lost {lost}")
    assert len(statuses) == 150 and lost == []

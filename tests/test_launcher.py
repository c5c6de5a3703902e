"""`make serve`'s launcher and the terminal: nothing it started outlives it, and busy ports are explained.

A closed terminal or a dropped SSH link sends SIGHUP to make's process group: it ended make and left
tritonserver, its stubs and the adapter running on their ports. Now SIGHUP stops everything, and even
a launcher killed with SIGKILL takes its children with it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from launcher.processes import free_port, port_in_use

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent


def serve(repository: Path, ports: list[int], log: Path, background: bool = False) -> subprocess.Popen[bytes]:
    """`python -m launcher serve` in a process group of its own, as make runs in a terminal's; `background`:
    with SIGINT ignored, as a non-interactive shell starts a job with `&`."""
    adapter, http, grpc, metrics = ports
    command = [sys.executable, "-m", "launcher", "serve", "--repository", str(repository), "--port", str(adapter)]
    command += ["--triton-http-port", str(http), "--triton-grpc-port", str(grpc), "--triton-metrics-port", str(metrics)]
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if background else None
    return subprocess.Popen(
        command, cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=ignore
    )


def twice(p: subprocess.Popen[bytes]) -> None:
    """make forwards a SIGTERM to the whole group: the launcher gets it twice, the second during its cleanup."""
    os.killpg(p.pid, signal.SIGTERM)
    time.sleep(0.3)
    os.killpg(p.pid, signal.SIGTERM)


def wait_serving(url: str, launcher: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert launcher.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"{url}/health/ready", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"not serving: {log.read_text()[-3000:]}")


def all_free(ports: list[int], within: float = 60) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not any(port_in_use(p) for p in ports):
            return True
        time.sleep(0.5)
    return False


@pytest.mark.parametrize(
    ("how", "kill", "background"),
    [
        ("SIGHUP to the process group (a closed terminal)", lambda p: os.killpg(p.pid, signal.SIGHUP), False),
        ("SIGKILL to the launcher alone", lambda p: os.kill(p.pid, signal.SIGKILL), False),
        ("SIGTERM twice to the process group (make forwards it)", twice, False),
        ("SIGINT to a background job (started with SIGINT ignored)", lambda p: os.kill(p.pid, signal.SIGINT), True),
    ],
)
def test_nothing_outlives_the_launcher(minilm_repository, tmp_path, how, kill, background) -> None:
    ports = [free_port() for _ in range(4)]
    log = tmp_path / "serve.log"
    launcher = serve(minilm_repository[0], ports, log, background)
    try:
        wait_serving(f"http://127.0.0.1:{ports[0]}", launcher, log)
        kill(launcher)
        code = launcher.wait(60)
        assert all_free(ports), f"{how}: ports still held: {[p for p in ports if port_in_use(p)]}"
        if code != -signal.SIGKILL:  # a stop signal: a clean stop, quiet however often it came
            output = log.read_text()
            assert code == 0 and "Traceback" not in output and output.rstrip().endswith("stopped"), output[-2000:]
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)


def test_busy_ports_name_the_process_that_holds_them(minilm_repository, tmp_path) -> None:
    ports = [free_port() for _ in range(4)]
    with socket.socket() as held:
        held.bind(("127.0.0.1", ports[1]))
        held.listen()
        log = tmp_path / "serve.log"
        launcher = serve(minilm_repository[0], ports, log)
        assert launcher.wait(120) == 1
    text = " ".join(log.read_text().split())  # rich may wrap lines
    assert f"ports in use: {ports[1]} by {os.getpid()} " in text, text


def test_a_name_without_a_model_is_refused(tmp_path) -> None:
    """`make serve NAME=x` without MODEL silently exported all-MiniLM-L6-v2 under the name x."""
    run = subprocess.run(
        [sys.executable, "-m", "launcher", "serve", "--name", "x", "--repository", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "--name x needs --model" in run.stderr
    assert not any(tmp_path.iterdir())  # nothing exported


def test_make_serve_passes_its_knobs(tmp_path) -> None:
    """REEXPORT, EXPORT_ARGS and HOST reach the launcher (make -n prints the command without running it)."""
    run = subprocess.run(
        ["make", "-n", "serve", "REEXPORT=1", "EXPORT_ARGS=--dtype float32", "HOST=0.0.0.0", "PORT=31000"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    command = " ".join(run.stdout.split())
    assert "-m launcher serve" in command and "--host 0.0.0.0 --port 31000" in command
    assert "--reexport --export-arg=--dtype --export-arg=float32" in command


def test_the_launcher_finds_a_models_ensembles_through_its_card() -> None:
    from launcher.__main__ import ensembles_of
    from tests.golden import GOLDEN

    gme = "gme-Qwen2-VL-2B-Instruct"
    assert ensembles_of(GOLDEN / "gme.local", gme) == [gme, f"{gme}_image"]
    assert ensembles_of(GOLDEN / "all-MiniLM-L6-v2.local", "all-MiniLM-L6-v2") == ["all-MiniLM-L6-v2"]


def test_a_tiny_checkpoint_is_announced_without_blank_lines(tmp_path) -> None:
    """`python -m tests.tiny` as the README shows it: its first line says what it wrote, and where."""
    run = subprocess.run(
        [sys.executable, "-m", "tests.tiny", "clip", str(tmp_path / "clip")], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == f"wrote a tiny clip-vit-large-patch14-336 to {tmp_path / 'clip'}"


def test_the_already_exported_hint_speaks_makes_language(minilm_repository, monkeypatch) -> None:
    """Under make (MAKELEVEL set) the hint is `REEXPORT=1`, the knob make users have; `--reexport` otherwise."""
    from launcher.__main__ import console, ensure_exported, parse_args

    args = parse_args(["serve", "--repository", str(minilm_repository[0])])
    for makelevel, hint in (("1", "make serve REEXPORT=1 to export it again"), (None, "--reexport to export it again")):
        if makelevel is None:
            monkeypatch.delenv("MAKELEVEL", raising=False)
        else:
            monkeypatch.setenv("MAKELEVEL", makelevel)
        with console.capture() as captured:
            ensure_exported(args)
        assert hint in captured.get()


def test_the_stub_finds_libpython_in_a_folder_of_its_own(tmp_path) -> None:
    """The Python-backend stub's library path starts with links to this interpreter's libpython only, not
    its LIBDIR (on a system Python, /usr/lib/x86_64-linux-gnu: CUDA images keep NCCL and cuDNN there)."""
    import sysconfig

    from launcher.tritonserver import server_env

    first = Path(server_env(tmp_path)["LD_LIBRARY_PATH"].split(os.pathsep)[0])
    assert first == tmp_path / "libpython"
    links = sorted(first.iterdir())
    assert links and all(p.is_symlink() and p.name.startswith("libpython") and p.exists() for p in links)
    assert sysconfig.get_config_var("INSTSONAME") in {p.name for p in links}

"""Peer servers a user might pick instead, each in its own virtual environment, started and stopped here."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from launcher.processes import free_port, stop, wait_http

INFINITY = ("torch==2.13.0", "infinity-emb[server,torch]==0.0.78")  # pins transformers 4.x: its own venv
VENVS = Path(__file__).resolve().parent.parent / "build" / "bench" / "peers"  # one per peer, whoever runs it


@dataclass
class Peer:
    name: str
    url: str
    model: str
    path: str  # the embeddings route
    process: subprocess.Popen[bytes]


def ensure_venv(folder: Path, requirements: tuple[str, ...]) -> Path:
    """A virtual environment with `requirements`, made once (a few minutes) and reused."""
    stamp = folder / ".installed"
    if stamp.exists() and stamp.read_text() == "\n".join(requirements):
        return folder / "bin"
    print(f"installing {' '.join(requirements)} into {folder} …", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True)
    subprocess.run([str(folder / "bin" / "pip"), "install", "-q", *requirements], check=True)
    stamp.write_text("\n".join(requirements))
    return folder / "bin"


@contextmanager
def infinity(checkpoint: Path, workdir: Path, batch_size: int = 32) -> Iterator[Peer]:
    """`infinity_emb v2` on the CPU with the torch engine, serving `checkpoint`."""
    bin_dir = ensure_venv(VENVS / "infinity", INFINITY)
    port = free_port()
    env = {**os.environ, "DO_NOT_TRACK": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", "HF_HUB_OFFLINE": "1"}
    log = (workdir / "infinity.log").open("ab")
    process = subprocess.Popen(
        [
            str(bin_dir / "infinity_emb"),
            "v2",
            "--model-id",
            str(checkpoint),
            "--served-model-name",
            "peer",
            "--engine",
            "torch",
            "--device",
            "cpu",
            "--batch-size",
            str(batch_size),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", process, timeout=600)
        yield Peer("infinity-emb 0.0.78 (torch, CPU)", f"http://127.0.0.1:{port}", "peer", "/embeddings", process)
    finally:
        stop(process)

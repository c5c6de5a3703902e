"""`EMBED_WORKERS=N`: N adapter processes behind one port.

One adapter process tops out near a thousand short requests a second (its event loop parses, validates
and encodes every request), far below what one GPU serves for a small model. With N workers, uvicorn's
supervisor binds the port once and hands the socket to N spawned processes, each with its own event
loop, coalescer and Triton channel; it replaces a worker that dies and stops them all on SIGINT/SIGTERM.
Each worker receives the parent's settings whole (JSON in its environment, so flags and `EMBED_*`
variables alike reach it) and dies with the parent, even one killed by SIGKILL.

What the workers share lives in one folder the parent makes and removes: their Prometheus samples
(prometheus_client's multiprocess mode: `/metrics` from any worker sums them all) and a readiness mark
per worker, so `/health/ready` answers 200 only when every worker is serving. Every bound in the
settings (requests in flight, buffered bytes, image fetches) holds per worker.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from client.metrics import MULTIPROC_ENV as METRICS_ENV
from client.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

SETTINGS_ENV = "EMBED_WORKER_SETTINGS"  # the parent's settings, as JSON
STATE_ENV = "EMBED_WORKER_STATE"  # the shared folder
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class WorkerSet:
    """This worker's view of the set: how many there are, and which have marked themselves ready."""

    state: Path
    count: int

    def _mark(self, pid: int) -> Path:
        return self.state / f"ready-{pid}"

    def mark_ready(self) -> None:
        self._mark(os.getpid()).touch()

    def mark_gone(self) -> None:
        self._mark(os.getpid()).unlink(missing_ok=True)
        if METRICS_ENV in os.environ:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())  # its live gauges (in flight) leave the sums

    def ready(self) -> int:
        """Workers that finished starting and are still alive (a killed one leaves its mark behind)."""
        alive = 0
        for mark in self.state.glob("ready-*"):
            try:
                os.kill(int(mark.name.removeprefix("ready-")), 0)
            except (ProcessLookupError, ValueError):
                continue
            except PermissionError:
                pass
            alive += 1
        return alive


def _die_with_parent() -> None:
    """SIGTERM when the supervisor dies, however it dies: no worker outlives it holding the port."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (AttributeError, OSError):  # not Linux
        return
    if os.getppid() == 1:  # the parent died before the call
        os.kill(os.getpid(), signal.SIGTERM)


def worker_app() -> FastAPI:
    """uvicorn's app factory in each worker: the parent's settings, and the set's shared folder."""
    from client.app import create_app
    from client.http_protocol import HeadDeadline

    settings = Settings.model_validate_json(os.environ[SETTINGS_ENV])
    _die_with_parent()
    HeadDeadline.seconds = settings.header_timeout_s
    return create_app(settings, workers=WorkerSet(Path(os.environ[STATE_ENV]), settings.workers))


def run_workers(settings: Settings, **server: Any) -> None:
    """Serve with `settings.workers` processes until SIGINT or SIGTERM; `server`: uvicorn's options."""
    import uvicorn

    state = Path(tempfile.mkdtemp(prefix="embed-workers-"))
    (state / "metrics").mkdir()
    os.environ.update(
        {SETTINGS_ENV: settings.model_dump_json(), STATE_ENV: str(state), METRICS_ENV: str(state / "metrics")}
    )
    try:
        uvicorn.run("client.workers:worker_app", factory=True, workers=settings.workers, **server)
    finally:
        shutil.rmtree(state, ignore_errors=True)

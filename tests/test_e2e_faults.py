"""Faults on a running stack: a stub killed as the OOM killer would, and what a killed server leaves behind.

A dead Python-backend stub made every later call of its model a 500 while readiness stayed 200, and
nothing restarted it. Now its calls are 503s, readiness goes 503, and the supervisor
(launcher/supervisor.py) reloads the model: service comes back without restarting anything else.
"""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from launcher.shm import SHM, stubs_of
from launcher.stack import running_stack

pytestmark = pytest.mark.e2e
MODEL = "all-MiniLM-L6-v2"


def encoder_stub(stack):
    (stub,) = (s for s in stubs_of(stack.triton.process.pid).values() if s.model == f"{MODEL}_encoder")
    return stub


def test_a_killed_stub_costs_503s_and_its_model_comes_back(minilm_repository, tmp_path) -> None:
    with running_stack(minilm_repository[0], tmp_path) as stack:
        url = stack.adapter_url
        assert httpx.post(f"{url}/v1/embeddings", json={"input": "before"}).status_code == 200
        stub = encoder_stub(stack)
        os.kill(stub.pid, signal.SIGKILL)
        statuses, start, recovered = [], time.monotonic(), None
        while time.monotonic() - start < 120:
            body = {"input": "during"} if len(statuses) % 2 else {"input": "during", "model": "minilm"}
            r = httpx.post(f"{url}/v1/embeddings", json=body, timeout=60)
            statuses.append(r.status_code)
            if r.status_code == 200:
                recovered = time.monotonic() - start
                break
            assert r.status_code == 503 and "request id" in r.json()["error"]["message"], r.text
            if len(statuses) == 1:
                assert httpx.get(f"{url}/health/ready").status_code == 503  # no longer claims to be ready
            time.sleep(0.5)
        assert recovered is not None, f"not back after 120 s: {statuses[-5:]}"
        assert httpx.get(f"{url}/health/ready").status_code == 200
        assert encoder_stub(stack).pid != stub.pid
        assert not (SHM / stub.region).exists()  # the dead stub's region was removed
        assert any("reloaded" in e for e in stack.supervisor.events), stack.supervisor.events
        regions = [s.region for s in stubs_of(stack.triton.process.pid).values()]
    assert regions and not any((SHM / r).exists() for r in regions)  # nothing of ours left after the stop

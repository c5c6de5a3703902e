"""The inference core: every task's calls to Triton, and what they say about readiness.

A task module (`client/embed.py`, `client/rerank.py`) checks its request and asks `Inference.run` for
the rows of a model's ensemble; `run` asks for the outputs the task table names for the model's task
(`contract/__init__.py`), goes through the coalescer (joined with concurrent requests of the same lane,
when `coalesce` is on), times the Triton stage, and keeps readiness in step: a 503 makes the next
`/health/ready` probe the model at once, and `succeeded` records a request that got its answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np

from client.coalescer import Coalescer
from client.errors import APIError
from client.registry import ModelRegistry
from client.settings import Settings
from client.triton import Outputs, ServedModel, TritonClient
from contract import TASK_TABLE, TEXT, triton_priority

UNRESOLVED = "unknown"  # the metric label of requests that name no served model or fail before resolution
# The request's `priority` (vLLM's: lower first, 0 by default), set by the body parser: every Triton call
# the request makes carries its level (contract.triton_priority), whichever task module makes it.
request_priority: ContextVar[int] = ContextVar("request_priority", default=0)


@dataclass
class Timings:
    """What the route reports of one request: the served model it resolved to, and seconds per stage."""

    model: str = UNRESOLVED
    image_fetch: float = 0.0
    triton: float = 0.0
    tokens: int = 0  # what the request counted, for the metrics


@contextmanager
def triton_stage(timings: Timings) -> Iterator[None]:
    """Count the block's time as the request's Triton stage."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings.triton += time.perf_counter() - start


class Inference:
    def __init__(
        self,
        settings: Settings,
        triton: TritonClient,
        registry: ModelRegistry,
        on_call: Callable[[str, int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.triton = triton
        self.registry = registry
        # Inference calls go through the coalescer (which joins them only with `coalesce`); tokenize and
        # readiness probes straight to Triton.
        self.calls = Coalescer(triton, settings.calls_in_flight, on_call, join=settings.coalesce)
        self.last_success: dict[str, float] = {}
        self._ready_probe: asyncio.Future | None = None
        self._ready_at = float("-inf")

    async def run(
        self,
        model: ServedModel,
        values: list[str] | list[bytes],
        timings: Timings,
        *,
        ensemble: str | None = None,
        max_batch: int | None = None,
        options: dict[str, str] | None = None,
        positions: list[int] | None = None,
        tensor: str = TEXT,
        columns: dict[str, list[str]] | None = None,
        field: str = "input",
        task: str | None = None,
    ) -> Outputs:
        """The outputs of `task` (default: the model's own) for `values` (the items of `tensor`), by name,
        in order; only those cross the wire. `ensemble` and `max_batch` default to the model's own (its
        image ensemble has others)."""
        try:
            with triton_stage(timings):
                return await self.calls.infer(
                    ensemble or model.name,
                    values,
                    max_batch or model.max_batch_size,
                    TASK_TABLE[task or model.card.task].output_names,
                    options,
                    positions,
                    tensor,
                    columns,
                    field,
                    triton_priority(request_priority.get()),
                )
        except APIError as exc:
            if exc.status == 503:  # readiness probes this model again now instead of trusting the TTL
                self.last_success.pop(model.name, None)
            raise

    async def tokenize(
        self, model: ServedModel, texts: list[str], options: dict[str, str], timings: Timings
    ) -> tuple[np.ndarray, np.ndarray]:
        """Padded ids `[n, width]` and counts `[n]` from the model's preprocess step (no encoder)."""
        with triton_stage(timings):
            return await self.triton.tokenize(f"{model.name}_preprocess", texts, model.max_batch_size, options)

    def succeeded(self, model: ServedModel) -> None:
        """A request for `model` got its answer: readiness trusts it for `ready_ttl_s`."""
        self.last_success[model.name] = time.monotonic()

    async def ready(self) -> list[str]:
        """Names of served models that answered an inference within `ready_ttl_s` (probing stale ones now).

        Open to anyone and outside the in-flight bound, so it is cheap to call: one probe at a time, its
        answer (or its error) reused for `ready_cache_s`, and concurrent callers share it.
        """
        probe = self._ready_probe
        if probe is None or (probe.done() and time.monotonic() - self._ready_at > self.settings.ready_cache_s):
            probe = self._ready_probe = asyncio.ensure_future(self._probe_ready())
            probe.add_done_callback(self._ready_done)
        return await asyncio.shield(probe)

    def _ready_done(self, probe: asyncio.Future) -> None:
        self._ready_at = time.monotonic()
        if not probe.cancelled():
            probe.exception()  # retrieved: each caller raises it for itself

    async def _probe_ready(self) -> list[str]:
        models = await self.registry.refresh()
        if not models:
            raise APIError(503, "no embedding model is ready in Triton", "service_unavailable", None, "no_model", True)
        now = time.monotonic()
        for model in models:
            if now - self.last_success.get(model.name, float("-inf")) > self.settings.ready_ttl_s:
                await self.triton.probe(model)
                self.last_success[model.name] = time.monotonic()
        return [m.name for m in models]

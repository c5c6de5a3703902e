"""Prometheus metrics of the adapter (Triton exports its own queue and compute times on its metrics port)."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client at import
BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """One registry per app, so tests and several apps in one process never share counters.

    Where `PROMETHEUS_MULTIPROC_DIR` is set (several adapter workers, client/workers.py), prometheus_client
    writes each process's samples to files there, and a scrape of any worker sums every worker's:
    counters and histograms add up, and the in-flight gauge counts the live workers' requests."""

    def __init__(self) -> None:
        self.multiprocess = MULTIPROC_ENV in os.environ
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "embed_requests_total",
            "Requests by route, model and HTTP status",
            ["route", "model", "status"],
            registry=self.registry,
        )
        self.items = Counter("embed_items_total", "Items embedded", ["model"], registry=self.registry)
        self.tokens = Counter("embed_tokens_total", "Prompt tokens embedded", ["model"], registry=self.registry)
        self.latency = Histogram(
            "embed_request_seconds",
            "Whole request time in the adapter",
            ["route", "model"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.stage = Histogram(
            "embed_stage_seconds",
            "Time per stage: image_fetch or triton (preprocess, queue and "
            "inference inside Triton are on Triton's own metrics port)",
            ["stage", "model"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.call_rows = Histogram(
            "embed_triton_call_rows",
            "Rows per Triton call, after concurrent requests were joined",
            ["ensemble"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "embed_in_flight_requests", "Requests being processed", registry=self.registry, multiprocess_mode="livesum"
        )
        self.rejected = Counter(
            "embed_rejected_total", "Requests refused by the in-flight bound (429)", registry=self.registry
        )

    def render(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        every_worker = CollectorRegistry()
        multiprocess.MultiProcessCollector(every_worker, os.environ[MULTIPROC_ENV])
        return generate_latest(every_worker)

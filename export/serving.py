"""The serving settings of the generated models: engine target, batching and instances."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from runtime.contract import Truncate

Target = Literal["local", "onnxruntime", "tensorrt"]
TARGETS: tuple[str, ...] = ("local", "onnxruntime", "tensorrt")


@dataclass(frozen=True)
class Serving:
    """Batching and instance settings of the generated models."""

    max_batch_size: int = 64  # rows per request into the ensemble and the preprocessor
    # Decoded-pixel cap per image (decompression bombs): a 4096² image, 50 MB of RGB; a 12 MP photo
    # fits, and a larger JPEG is decoded at 1/2, 1/4 or 1/8 scale to fit (runtime/images.py).
    max_image_pixels: int = 4096 * 4096
    # Every batched model's queue is bounded: a full queue refuses at once (UNAVAILABLE: the adapter's
    # 503 with Retry-After), and a request waits at most its own deadline (the adapter passes its
    # call timeout) or this default, never forever behind abandoned work.
    max_queue_size: int = 256
    queue_timeout_us: int = 60_000_000
    encoder_max_batch_size: int = 512  # rows per encoder execute (several requests, regrouped by length)
    # Encoders do not wait for more requests: the adapter joins concurrent requests in front of Triton
    # (client/coalescer.py), and Triton's batcher still joins the calls that queue while an instance is
    # busy. Measured with the coalescer, 0 vs 1000 µs over five interleaved rounds (docs/benchmarks.md,
    # "Coalescing"): single query p50 1.2 ms lower at 0 in all five; throughput at 1 and at 32 texts
    # per request within the rounds' spread (each side ahead in two or three). Without the coalescer an
    # earlier A/B favoured 1000 µs at 32 texts per request (0.97× vs 0.91× in-process); export with
    # `--queue-delay-us 1000` for tritonclient traffic of small requests that never passes the adapter.
    queue_delay_us: int = 0
    preprocess_queue_delay_us: int = 0
    preprocess_instances: int = 1
    encoder_instances: int = 1
    intra_op_threads: int = 0
    default_truncate: Truncate = "END"

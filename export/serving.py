"""The serving settings of the generated models: engine target, batching and instances."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Target = Literal["local", "onnxruntime", "tensorrt"]
TARGETS: tuple[str, ...] = ("local", "onnxruntime", "tensorrt")


@dataclass(frozen=True)
class Serving:
    """Batching and instance settings of the generated models."""

    max_batch_size: int = 64  # rows per request into the ensemble and the preprocessor
    max_image_pixels: int = 50_000_000  # decoded-pixel cap per image (decompression bombs)
    encoder_max_batch_size: int = 512  # rows per encoder execute (several requests, regrouped by length)
    # Encoders wait up to 1 ms for more requests. Measured on the CPU, 0 vs 1000 µs over five A/B
    # rounds: 32/request throughput 0.91× vs 0.97× in-process (1 ms ahead in all five), single
    # query about 1 ms faster at 0. 250 vs 1000 µs over three rounds: 1 ms ahead at 32 and at 1 text per
    # request in all three, single query no different. Preprocessors are cheap per request and never wait.
    queue_delay_us: int = 1000
    preprocess_queue_delay_us: int = 0
    preprocess_instances: int = 1
    encoder_instances: int = 1
    intra_op_threads: int = 0
    default_truncate: Literal["NONE", "START", "END"] = "END"

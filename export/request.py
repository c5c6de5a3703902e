"""The export's value types: what is asked (`ExportRequest`), how the models serve (`Serving`), and the
settings a graph or an engine is built with. A leaf: standard library, the contract and the graphs'
settings only, so any module can import them without torch, and without the pipeline that uses them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from contract import Task, Truncate
from graphs.settings import Attention, Dtype, GraphSettings, PoolingMode  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    from export.checkpoint import Plan

INPUT_NAMES = ("input_ids", "attention_mask")  # a text graph's inputs (and a TensorRT profile's)


Target = Literal["auto", "local", "openvino", "onnxruntime", "tensorrt", "torch"]
# What runs the encoder; `auto` chooses one of them at export: the fastest CPU engine measured there among
# local, openvino and torch, in fp32 and, where the CPU has bf16 instructions, bf16 (export/engine_choice.py).
ENGINE_TARGETS: tuple[str, ...] = ("local", "openvino", "onnxruntime", "tensorrt", "torch")
TARGETS: tuple[str, ...] = ("auto", *ENGINE_TARGETS)
# Targets whose encoder runs inside a Python-backend host (in-process ONNX Runtime or OpenVINO, or the
# PyTorch graph) rather than in a native engine model.
HOSTED_TARGETS: tuple[str, ...] = ("local", "openvino", "torch")
# Targets that run the exported ONNX graph on the CPU inside the host, and the runtime each names in the host's
# config (EncoderHostParams.onnx_runtime).
ONNX_RUNTIMES: dict[str, str] = {"local": "onnxruntime", "openvino": "openvino"}
ONNX_HOSTED_TARGETS: tuple[str, ...] = tuple(ONNX_RUNTIMES)
# Targets that serve bf16 on the CPU over fp32 weights (PyTorch under autocast, OpenVINO's inference precision).
CPU_BF16_TARGETS: tuple[str, ...] = ("torch", "openvino")


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


@dataclass(frozen=True)
class Tolerance:
    """How far an fp32 engine may stray from PyTorch on the validation inputs."""

    atol: float = 1e-4  # max |engine - torch| per embedding component
    min_cosine: float = 0.99999


@dataclass(frozen=True)
class Profile:
    """One optimisation profile over (batch, sequence)."""

    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32
    min_seq: int = 1
    opt_seq: int = 512
    max_seq: int = 4096

    def __post_init__(self) -> None:
        if self.min_batch != 1 or self.min_seq != 1:
            raise ValueError(
                f"a profile's minimum batch and sequence must be 1 (a one-row or short request would be "
                f"refused at inference), got batch {self.min_batch}, sequence {self.min_seq}"
            )
        if not (1 <= self.min_batch <= self.opt_batch <= self.max_batch):
            raise ValueError(f"batch profile must satisfy 1 ≤ min ≤ opt ≤ max, got {self}")
        if not (1 <= self.min_seq <= self.opt_seq <= self.max_seq):
            raise ValueError(f"sequence profile must satisfy 1 ≤ min ≤ opt ≤ max, got {self}")

    def shapes(self) -> dict[str, tuple[tuple[int, int], tuple[int, int], tuple[int, int]]]:
        """`{input: (min, opt, max)}` for every engine input."""
        shape = ((self.min_batch, self.min_seq), (self.opt_batch, self.opt_seq), (self.max_batch, self.max_seq))
        return {name: shape for name in INPUT_NAMES}

    @classmethod
    def parse(cls, text: str, max_seq: int) -> Profile:
        """`"1,8,32:1,512,4096"` → Profile; the sequence part defaults to 1,min(512,max),max."""
        batch, _, seq = text.partition(":")
        b = [int(x) for x in batch.split(",")]
        s = [int(x) for x in seq.split(",")] if seq else [1, min(512, max_seq), max_seq]
        return cls(*b, *s)


Shapes = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


EXTERNAL_DATA_BYTES = 1_500_000_000
# The default TensorRT profile's largest call, rows × tokens. TensorRT reserves activation memory for
# the profile's largest shape (kSTATIC: "the maximum size across all profiles", NvInferRuntime.h), so
# 64 rows × Qwen3's 32,768 tokens would ask for far more than any GPU has. At 32,768 tokens a call,
# e5-mistral (4,096 tokens) takes 8 rows, gte-Qwen2 (8,192) 4, Qwen3 (32,768) 1, MiniLM 64.
TENSORRT_TOKENS_PER_CALL = 32768


@dataclass(frozen=True)
class ExportRequest:
    checkpoint: Path
    repository: Path
    name: str
    target: Target = "local"
    hf_id: str = ""
    aliases: tuple[str, ...] = ()
    max_length: int | None = None
    external_data: bool | None = None  # None: only when the weights need it
    gpu: bool = False
    attention: Attention | None = None  # None: decided from the checkpoint (export/checkpoint.py)
    dtype: Dtype | None = None  # None: fp32 for local, the family's GPU dtype for the GPU targets
    task: Task | None = None  # None: rerank for a `*ForSequenceClassification` checkpoint, else embed
    profile: str | None = None  # tensorrt: "min,opt,max[:min,opt,max]"; None: sequence 1..limit, rows by the budget
    tensorrt_tokens: int = TENSORRT_TOKENS_PER_CALL  # the default profile's rows × tokens
    batch_from_profile: bool = False  # the served max batch is the TensorRT profile's (no --max-batch-size)
    min_pixels: int | None = None  # image resize bounds of patch-image families (default: the family's)
    max_pixels: int | None = None
    workspace_mib: int = 8192  # TensorRT builder workspace
    serving: Serving = Serving()
    engine_candidates: tuple[str, ...] = ()  # what `auto` measured, for the card (`engine:texts/s:cosine:gate`)
    int8_ranges: tuple[float, ...] = ()  # calibrated at export: each dimension's minimum, then its maximum

    def plan(self) -> Plan:
        from export.checkpoint import plan

        return plan(self.checkpoint, self)

    @property
    def on_gpu(self) -> bool:
        return self.target == "tensorrt" or (self.target in ("onnxruntime", "torch") and self.gpu)

    def tensorrt_profile(self, p: Plan) -> Profile:
        """`--profile`, or by default: every length up to the token limit, with as many rows as
        `tensorrt_tokens` allows at that length (at least one, at most the max batch)."""
        limit = p.layout.max_length
        if self.profile:
            return Profile.parse(self.profile, limit)
        rows = max(1, min(self.serving.max_batch_size, self.tensorrt_tokens // limit))
        return Profile(1, min(8, rows), rows, 1, min(512, limit), limit)

    def fitted(self, p: Plan) -> ExportRequest:
        """With `batch_from_profile`, a TensorRT engine that Triton batches itself gets at most its profile's
        rows a call (an engine behind a host gets the rows the host packs, `TextTower.call_rows`)."""
        batched_by_triton = any(not tower.behind_host(self) for tower in p.family.towers)
        if self.target != "tensorrt" or not self.batch_from_profile or not batched_by_triton:
            return self
        rows = self.tensorrt_profile(p).max_batch
        return replace(self, serving=replace(self.serving, max_batch_size=rows))

    def check(self, p: Plan) -> None:
        """Every option against every other and against the checkpoint, before any long work starts."""
        from export.errors import ExportError
        from export.validation import cuda_onnxruntime

        problems = []
        dtype = self.resolved_dtype(p)
        if self.target == "tensorrt":
            profile = self.tensorrt_profile(p)
            if self.serving.max_batch_size > profile.max_batch:
                problems.append(
                    f"--max-batch-size {self.serving.max_batch_size} exceeds the TensorRT profile's max batch "
                    f"{profile.max_batch}, which Triton would refuse: lower it, or widen --profile "
                    f"(or --tensorrt-tokens, {self.tensorrt_tokens} tokens a call by default)"
                )
            if profile.max_seq < p.layout.max_length:
                problems.append(
                    f"the TensorRT profile's max sequence {profile.max_seq} is below the token limit "
                    f"{p.layout.max_length}: widen --profile or lower --max-length"
                )
        elif self.target == "auto" and (self.gpu or self.dtype is not None):
            problems.append(
                "--target auto measures the CPU engines and picks the dtype itself: name a target for --gpu or "
                "--dtype (local, openvino, torch, onnxruntime, tensorrt)"
            )
        elif self.target == "openvino" and (self.gpu or dtype == "float16"):
            problems.append(
                "--target openvino serves on the CPU, in float32 or bfloat16: drop --gpu, or use --dtype bfloat16"
            )
        elif self.target == "torch" and not self.on_gpu and dtype == "float16":
            problems.append("a float16 torch graph is not served on the CPU: use --dtype bfloat16 (or float32)")
        elif dtype == "bfloat16" and self.target not in CPU_BF16_TARGETS and not cuda_onnxruntime():
            problems.append(
                f"a bfloat16 {self.target} engine needs ONNX Runtime's CUDA provider, to serve it and to validate it "
                "(its CPU kernels have no bf16): export on the GPU host, use --target tensorrt, or --dtype float32"
            )
        problems += [problem for tower in p.family.towers for problem in tower.problems(p, self)]
        if problems:
            raise ExportError("; ".join(problems))

    def resolved_dtype(self, p: Plan) -> Dtype:
        if self.dtype is not None:
            return self.dtype
        return p.family.gpu_dtype if self.on_gpu else "float32"

    def cpu_autocast(self, p: Plan) -> bool:
        """An engine served on the CPU in bf16 over fp32 weights, checked against the fp32 reference: a `torch`
        graph's matrix products under autocast (runtime/torch_session.py), or an `openvino` graph compiled
        with bf16 inference precision (runtime/openvino_session.py); the ONNX graph itself stays fp32."""
        return self.target in CPU_BF16_TARGETS and not self.on_gpu and self.resolved_dtype(p) == "bfloat16"

    def reference_dtype(self, p: Plan) -> Dtype:
        """The dtype the PyTorch reference is computed in: the engine's own, but fp32 for a CPU autocast graph."""
        return "float32" if self.cpu_autocast(p) else self.resolved_dtype(p)

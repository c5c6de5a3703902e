"""The export pipeline: plan → ONNX → fatal validation → model repository."""

from __future__ import annotations

import multiprocessing
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rich.console import Console

from export import repository as repo
from export.checkpoint import Plan, plan
from export.errors import ExportError
from export.graph import Agreement, EmbeddingGraph, compare, export_onnx, torch_reference
from export.specs import Attention, Dtype
from export.tensorrt import Profile, build_engine, run_engine
from runtime.text import Prompt, encode, frame_all, pad

# Fixed validation inputs: short and long, ASCII and not, so padding is exercised.
VALIDATION_TEXTS = (
    "a cat",
    "The quick brown fox jumps over the lazy dog.",
    "Triton serves embeddings; ONNX Runtime runs them on the CPU. " * 12,
    "Ünïcödé, 中文, emoji 🚀 and numbers 12345.",
)
EXTERNAL_DATA_BYTES = 1_500_000_000


@dataclass(frozen=True)
class ExportRequest:
    checkpoint: Path
    repository: Path
    name: str
    target: repo.Target = "local"
    hf_id: str = ""
    aliases: tuple[str, ...] = ()
    max_length: int | None = None
    external_data: bool | None = None  # None: only when the weights need it
    gpu: bool = False
    attention: Attention | None = None  # None: decided from the checkpoint (export/checkpoint.py)
    dtype: Dtype | None = None  # None: fp32 for local, the family's GPU dtype for the GPU targets
    profile: Profile | None = None  # tensorrt only; None: batch 1..max batch, sequence 1..max length
    serving: repo.Serving = repo.Serving()

    def resolved_dtype(self, p: Plan) -> Dtype:
        if self.dtype is not None:
            return self.dtype
        return p.spec.gpu_dtype if self.target == "tensorrt" or (self.target == "onnxruntime" and self.gpu) else "float32"


@dataclass(frozen=True)
class ExportResult:
    plan: Plan
    agreement: Agreement
    models: tuple[Path, ...]


class Progress:
    """One line per finished step, a spinner while it runs."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        start = time.perf_counter()
        with self.console.status(what):
            yield
        self.console.print(f"[green]✓[/] {what} ({time.perf_counter() - start:.1f} s)")


def _load_graph(p: Plan, dtype: Dtype = "float32") -> EmbeddingGraph:
    """The backbone in `dtype` with the plan's attention mode, wrapped with pooling and normalisation."""
    import torch
    from transformers import AutoModel

    backbone = AutoModel.from_pretrained(str(p.transformer_dir), dtype=getattr(torch, dtype)).eval()
    if p.spec.decoder:
        # transformers ≥ 5.2 builds a bidirectional mask for decoders when is_causal is False.
        backbone.config.is_causal = p.attention == "causal"
    return EmbeddingGraph(backbone, p.pooling, p.normalize)


def _validation_batch(p: Plan):
    return pad(frame_all(encode(p.tokenizer, list(VALIDATION_TEXTS)), p.layout, "END"), p.layout)


def _onnx_session(path: Path, dtype: Dtype):
    """ONNX Runtime on the GPU when it has one; bf16 graphs cannot run on its CPU kernels."""
    import onnxruntime as ort

    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    if dtype == "bfloat16" and "CUDAExecutionProvider" not in providers:
        raise ExportError("a bfloat16 graph can only be validated on a GPU (ONNX Runtime has no bf16 CPU kernels); "
                          "export on the GPU host, or pass --dtype float32")
    return ort.InferenceSession(str(path), providers=providers)


def _tolerance(p: Plan, dtype: Dtype) -> tuple[float, float]:
    return (p.spec.atol, p.spec.min_cosine) if dtype == "float32" else (2e-2, 0.999)


def _validate(p: Plan, reference: np.ndarray, onnx_path: Path, dtype: Dtype) -> Agreement:
    batch = _validation_batch(p)
    candidate = _onnx_session(onnx_path, dtype).run(None, {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask})[0]
    return compare(reference, candidate, *_tolerance(p, dtype))


def _export_graph(request: ExportRequest, dtype: Dtype, onnx_path: Path) -> np.ndarray:
    """Load the weights once (in `dtype`), compute the PyTorch reference, export ONNX; returns the reference."""
    progress = Progress()
    p = plan(request.checkpoint, request.max_length, request.attention)
    with progress.step(f"load {p.model_type} weights in {dtype} and compute the PyTorch reference"):
        graph = _load_graph(p, dtype)
        batch = _validation_batch(p)
        reference = torch_reference(graph, batch.input_ids, batch.attention_mask)
    n_bytes = sum(t.numel() * t.element_size() for t in graph.parameters())
    external = request.external_data if request.external_data is not None else n_bytes > EXTERNAL_DATA_BYTES
    with progress.step(f"export ONNX ({n_bytes / 1e6:.0f} MB of {dtype} weights{', external data' if external else ''})"):
        export_onnx(graph, onnx_path, p.layout.max_length, external)
    return reference


def export(request: ExportRequest, progress: Progress | None = None) -> ExportResult:
    """Export `request.checkpoint` and write its Triton models; raises on any failure."""
    progress = progress or Progress()
    with progress.step(f"read checkpoint {request.checkpoint}"):
        p = plan(request.checkpoint, request.max_length, request.attention)
    dtype = request.resolved_dtype(p)
    progress.console.print(f"  {p.spec.family}: {p.pooling} pooling, normalize={p.normalize}, {p.attention} attention "
                           f"({p.attention_signal}), max {p.layout.max_length} tokens, {dtype}")
    work_dir = request.repository / f"{request.name}_encoder" / "1"
    onnx_path = work_dir / "model.onnx"
    for stale in (onnx_path, onnx_path.with_name("model.onnx.data"), work_dir / "model.plan"):
        stale.unlink(missing_ok=True)
    # The weights live only in a child process, which exits before ONNX Runtime loads the graph:
    # at no point are two copies of the model in memory.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        reference = pool.submit(_export_graph, request, dtype, onnx_path).result()
    batch = _validation_batch(p)
    with progress.step("validate ONNX Runtime against PyTorch"):
        agreement = _validate(p, reference, onnx_path, dtype)
    progress.console.print(f"  max |error| {agreement.max_abs_error:.2e}, min cosine {agreement.min_cosine:.8f}")
    if request.target == "tensorrt":
        profile = request.profile or Profile(max_batch=request.serving.max_batch_size, opt_seq=min(512, p.layout.max_length),
                                             max_seq=p.layout.max_length)
        with progress.step(f"build TensorRT plan {profile}"):
            build_engine(onnx_path, work_dir / "model.plan", profile)
        with progress.step("validate TensorRT against PyTorch"):
            agreement = compare(reference, run_engine(work_dir / "model.plan", batch.input_ids, batch.attention_mask),
                                *_tolerance(p, dtype))
        progress.console.print(f"  max |error| {agreement.max_abs_error:.2e}, min cosine {agreement.min_cosine:.8f}")
    with progress.step(f"write Triton models to {request.repository}"):
        models = _write_models(request, p)
    return ExportResult(p, agreement, models)


def _write_models(request: ExportRequest, p: Plan) -> tuple[Path, ...]:
    card = repo.ModelCard(
        name=request.name,
        dimension=p.dimension,
        max_tokens=p.layout.max_length,
        hf_id=request.hf_id,
        aliases=request.aliases,
    )
    pre_dir = request.repository / f"{request.name}_preprocess"
    enc_dir = request.repository / f"{request.name}_encoder"
    ens_dir = request.repository / request.name
    prompt = Prompt(p.query_template, p.default_instruction)
    repo.write_config(pre_dir, repo.preprocess_config(request.name, p.layout, request.serving, prompt))
    repo.install_python_model(pre_dir / "1", "preprocess_model")
    p.tokenizer.save(str(pre_dir / "1" / "tokenizer.json"))
    repo.write_config(enc_dir, repo.encoder_config(request.name, p.dimension, request.target, request.serving, request.gpu))
    if request.target == "local":
        repo.install_python_model(enc_dir / "1", "onnx_encoder_model")
    else:
        leftovers = ("model.py", "runtime") if request.target == "onnxruntime" else ("model.py", "runtime", "model.onnx", "model.onnx.data")
        for leftover in leftovers:
            path = enc_dir / "1" / leftover
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    repo.write_config(ens_dir, repo.ensemble_config(card, request.serving))
    return (ens_dir, pre_dir, enc_dir)

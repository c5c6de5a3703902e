"""The export pipeline: plan → ONNX → fatal validation → model repository."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from export import repository as repo
from export.checkpoint import Plan, plan
from export.errors import ExportError
from export.graph import Agreement, EmbeddingGraph, compare, export_onnx, torch_reference
from runtime.onnx_encoder import open_session
from runtime.text import encode, frame_all, pad

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
    serving: repo.Serving = repo.Serving()


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


def _load_graph(p: Plan) -> EmbeddingGraph:
    from transformers import AutoModel

    backbone = AutoModel.from_pretrained(str(p.transformer_dir), dtype="float32").eval()
    return EmbeddingGraph(backbone, p.pooling, p.normalize)


def _validate(p: Plan, graph: EmbeddingGraph, onnx_path: Path) -> Agreement:
    batch = pad(frame_all(encode(p.tokenizer, list(VALIDATION_TEXTS)), p.layout, "END"), p.layout)
    reference = torch_reference(graph, batch.input_ids, batch.attention_mask)
    session = open_session(str(onnx_path))
    candidate = session.run(None, {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask})[0]
    return compare(reference, candidate, p.spec.atol, p.spec.min_cosine)


def export(request: ExportRequest, progress: Progress | None = None) -> ExportResult:
    """Export `request.checkpoint` and write its Triton models; raises on any failure."""
    progress = progress or Progress()
    if request.target == "tensorrt":
        raise ExportError("the tensorrt target is not available in this build yet; use local or onnxruntime")
    with progress.step(f"read checkpoint {request.checkpoint}"):
        p = plan(request.checkpoint, request.max_length)
    with progress.step(f"load {p.model_type} weights ({p.spec.family}, {p.pooling} pooling)"):
        graph = _load_graph(p)
    n_bytes = sum(t.numel() * t.element_size() for t in graph.parameters())
    external = request.external_data if request.external_data is not None else n_bytes > EXTERNAL_DATA_BYTES
    encoder_dir = request.repository / f"{request.name}_encoder"
    onnx_path = encoder_dir / "1" / "model.onnx"
    for stale in (onnx_path, onnx_path.with_name("model.onnx.data")):
        stale.unlink(missing_ok=True)
    with progress.step(f"export ONNX ({n_bytes / 1e6:.0f} MB of weights{', external data' if external else ''})"):
        export_onnx(graph, onnx_path, p.layout.max_length, external)
    with progress.step("validate ONNX Runtime against PyTorch"):
        agreement = _validate(p, graph, onnx_path)
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
    repo.write_config(pre_dir, repo.preprocess_config(request.name, p.layout, request.serving))
    repo.install_python_model(pre_dir / "1", "preprocess_model")
    p.tokenizer.save(str(pre_dir / "1" / "tokenizer.json"))
    repo.write_config(enc_dir, repo.encoder_config(request.name, p.dimension, request.target, request.serving, request.gpu))
    if request.target == "local":
        repo.install_python_model(enc_dir / "1", "onnx_encoder_model")
    else:
        for leftover in ("model.py", "runtime"):
            path = enc_dir / "1" / leftover
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    repo.write_config(ens_dir, repo.ensemble_config(card, request.serving))
    return (ens_dir, pre_dir, enc_dir)

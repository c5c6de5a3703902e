"""The export pipeline: plan → ONNX per tower → fatal validation → (TensorRT) → model repository."""

from __future__ import annotations

import multiprocessing
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from export import repository as repo
from export.backend_rules import violations
from export.checkpoint import Plan, plan
from export.errors import ExportError
from export.gme import LanguageGraph, VisionGraph, gme_text_samples, gme_vision_samples
from export.graph import (
    Agreement,
    ClipImageGraph,
    ClipTextGraph,
    EmbeddingGraph,
    compare,
    export_onnx,
    image_samples,
    text_samples,
    torch_reference,
)
from export.specs import Attention, Dtype
from export.tensorrt import Profile, build_engine, check_tensorrt, gme_shapes, image_shapes, run_engine
from export.validation import cuda_onnxruntime, onnx_session, tolerance, validation_feeds
from runtime.onnx_encoder import VISION_PATCHES_PER_CALL
from runtime.text import Prompt

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
    profile: str | None = None  # tensorrt: "min,opt,max[:min,opt,max]"; None: batch 1..max batch, sequence 1..limit
    min_pixels: int | None = None  # GME image bounds (default: the authors' 256·28² … 1280·28²)
    max_pixels: int | None = None
    workspace_mib: int = 8192  # TensorRT builder workspace
    serving: repo.Serving = repo.Serving()

    def plan(self) -> Plan:
        return plan(self.checkpoint, self.max_length, self.attention, self.min_pixels, self.max_pixels)

    @property
    def on_gpu(self) -> bool:
        return self.target == "tensorrt" or (self.target == "onnxruntime" and self.gpu)

    def tensorrt_profile(self, p: Plan) -> Profile:
        """The engine's (batch, sequence) profile; the sequence range defaults to the model's token limit."""
        limit = p.layout.max_length
        if self.profile:
            return Profile.parse(self.profile, limit)
        top = self.serving.max_batch_size
        return Profile(1, min(8, top), top, 1, min(512, limit), limit)

    def check(self, p: Plan) -> None:
        """Every option against every other and against the checkpoint, before any long work starts."""
        problems = []
        dtype = self.resolved_dtype(p)
        if self.target == "tensorrt":
            profile = self.tensorrt_profile(p)
            if self.serving.max_batch_size > profile.max_batch:
                problems.append(
                    f"--max-batch-size {self.serving.max_batch_size} exceeds the TensorRT profile's max batch "
                    f"{profile.max_batch}, which Triton would refuse: lower it or widen --profile"
                )
            if profile.max_seq < p.layout.max_length:
                problems.append(
                    f"the TensorRT profile's max sequence {profile.max_seq} is below the token limit "
                    f"{p.layout.max_length}: widen --profile or lower --max-length"
                )
            if p.vision is not None:
                from runtime.onnx_encoder import Packing

                if profile.max_batch < Packing.max_rows:
                    problems.append(
                        f"GME's host packs up to {Packing.max_rows} rows a call: the TensorRT profile's max batch "
                        f"({profile.max_batch}) must allow it"
                    )
        elif dtype == "bfloat16" and not cuda_onnxruntime():
            problems.append(
                f"a bfloat16 {self.target} engine needs ONNX Runtime's CUDA provider, to serve it and to validate it "
                "(its CPU kernels have no bf16): export on the GPU host, use --target tensorrt, or --dtype float32"
            )
        if problems:
            raise ExportError("; ".join(problems))

    def resolved_dtype(self, p: Plan) -> Dtype:
        if self.dtype is not None:
            return self.dtype
        return p.spec.gpu_dtype if self.on_gpu else "float32"

    @property
    def vision_patches_per_call(self) -> int:
        """GME: patches its vision host packs into one engine call (runtime/onnx_encoder.py has the measurements)."""
        return VISION_PATCHES_PER_CALL["gpu" if self.on_gpu else "cpu"]

    def behind_host(self, p: Plan) -> bool:
        """GME on a native backend: the engines sit behind Python hosts that pack ragged batches."""
        return p.vision is not None and self.target != "local"

    def engine_dir(self, tower: str, p: Plan) -> Path:
        """`<name>_encoder/1` for text, `<name>_vision/1` for images; `…_engine/1` behind a host."""
        model = f"{self.name}_{'encoder' if tower == 'text' else 'vision'}"
        return self.repository / (f"{model}_engine" if self.behind_host(p) else model) / "1"


@dataclass(frozen=True)
class ExportResult:
    plan: Plan
    agreement: Agreement  # the worst tower's
    models: tuple[Path, ...]


def quiet_libraries() -> None:
    """Only our own lines on the console: torch's ONNX exporter logs and warns about things that do not
    concern an export (torchvision's absence, deprecations, dynamic-axis names), transformers draws bars."""
    import logging
    import warnings

    for name in ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(torch|onnxscript|transformers)\b")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


class Progress:
    """One line per finished step, a spinner while it runs; long paths never wrap, terminal or not."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True, soft_wrap=True)

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        start = time.perf_counter()
        with self.console.status(what):
            yield
        self.console.print(f"[green]✓[/] {what} ({time.perf_counter() - start:.1f} s)")


def _load_graphs(p: Plan, dtype: Dtype) -> dict[str, torch.nn.Module]:
    """Each tower's graph in `dtype`, with the plan's attention mode for decoders."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(p.transformer_dir), dtype=getattr(torch, dtype)).eval()
    if p.spec.family == "clip":
        return {"text": ClipTextGraph(model), "image": ClipImageGraph(model)}
    if p.spec.family == "gme":
        assert p.image_token_id is not None
        return {"text": LanguageGraph(model, p.image_token_id), "image": VisionGraph(model.visual)}
    if p.spec.decoder:
        # transformers ≥ 5.2 builds a bidirectional mask for decoders when is_causal is False.
        model.config.is_causal = p.attention == "causal"
    return {"text": EmbeddingGraph(model, p.pooling, p.normalize)}


def _export_graphs(request: ExportRequest, dtype: Dtype) -> dict[str, tuple[dict[str, np.ndarray], np.ndarray]]:
    """Load the weights once (in `dtype`), compute each tower's reference, export ONNX.

    Returns each tower's validation feeds and PyTorch reference."""
    quiet_libraries()
    progress = Progress()
    p = request.plan()
    with progress.step(f"load {p.model_type} weights in {dtype} and compute the PyTorch reference"):
        graphs = _load_graphs(p, dtype)
        feeds = {t: validation_feeds(p, t, graphs) for t in graphs}
        references = {t: (feeds[t], torch_reference(g, *feeds[t].values())) for t, g in graphs.items()}
    n_bytes = sum(t.numel() * t.element_size() for g in graphs.values() for t in g.parameters())
    external = request.external_data if request.external_data is not None else n_bytes > EXTERNAL_DATA_BYTES
    for tower, graph in graphs.items():
        if tower == "image" and p.vision is not None:
            samples, dynamic = gme_vision_samples()
        elif tower == "image":
            assert p.image is not None
            samples, dynamic = image_samples(p.image.crop_height, p.image.crop_width)
        elif p.vision is not None:
            samples, dynamic = gme_text_samples(p.layout.max_length, p.image_token_id or 0, p.dimension)
        else:
            samples, dynamic = text_samples(p.layout.max_length)
        size = sum(t.numel() * t.element_size() for t in graph.parameters())
        with progress.step(
            f"export the {tower} tower to ONNX ({size / 1e6:.0f} MB of {dtype} weights"
            f"{', external data' if external else ''})"
        ):
            output = "IMAGE_EMBEDS" if tower == "image" and p.vision is not None else "EMBEDDING"
            export_onnx(graph, request.engine_dir(tower, p) / "model.onnx", samples, dynamic, external, output)
    return references


def _build_plan(
    request: ExportRequest,
    p: Plan,
    tower: str,
    feeds: dict[str, np.ndarray],
    reference: np.ndarray,
    dtype: Dtype,
    progress: Progress,
) -> Agreement:
    work_dir = request.engine_dir(tower, p)
    profile = request.tensorrt_profile(p)
    if p.vision is not None:
        largest_image = p.vision.max_pixels // p.vision.patch_size**2
        shapes = gme_shapes(tower, profile, p.dimension, request.vision_patches_per_call, largest_image)
    elif tower == "image":
        assert p.image is not None
        shapes = image_shapes(profile, p.image.crop_height, p.image.crop_width)
    else:
        shapes = profile.shapes()
    with progress.step(f"build the {tower} TensorRT plan {shapes}"):
        build_engine(work_dir / "model.onnx", work_dir / "model.plan", shapes, request.workspace_mib)
    with progress.step(f"validate the {tower} TensorRT plan against PyTorch"):
        return compare(reference, run_engine(work_dir / "model.plan", feeds), *tolerance(p, dtype))


def export(request: ExportRequest, progress: Progress | None = None) -> ExportResult:
    """Export `request.checkpoint` and write its Triton models; raises on any failure."""
    progress = progress or Progress()
    quiet_libraries()
    with progress.step(f"read checkpoint {request.checkpoint}"):
        p = request.plan()
        request.check(p)
        if request.target == "tensorrt":
            check_tensorrt()
    dtype = request.resolved_dtype(p)
    progress.console.print(
        f"  {p.spec.family}: towers {', '.join(p.spec.towers)}, {p.pooling} pooling, "
        f"normalize={p.normalize}, {p.attention} attention ({p.attention_signal}), "
        f"max {p.layout.max_length} tokens, {dtype}"
    )
    for tower in p.spec.towers:
        work_dir = request.engine_dir(tower, p)
        for stale in ("model.onnx", "model.onnx.data", "model.plan"):
            (work_dir / stale).unlink(missing_ok=True)
    # The weights live only in a child process, which exits before ONNX Runtime loads the graphs:
    # at no point are two copies of the model in memory.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        checks = pool.submit(_export_graphs, request, dtype).result()
    references = {tower: reference for tower, (_, reference) in checks.items()}
    agreements = []
    for tower in p.spec.towers:
        feeds = checks[tower][0]
        if dtype == "bfloat16" and request.target == "tensorrt" and not cuda_onnxruntime():
            progress.console.print(f"  {tower}: ONNX Runtime has no bf16 CPU kernels; the TensorRT plan is validated")
        else:
            with progress.step(f"validate the {tower} tower: ONNX Runtime against PyTorch"):
                session = onnx_session(request.engine_dir(tower, p) / "model.onnx", dtype)
                agreement = compare(references[tower], session.run(None, feeds)[0], *tolerance(p, dtype))
                del session
            progress.console.print(
                f"  max |error| {agreement.max_abs_error:.2e}, min cosine {agreement.min_cosine:.8f}"
            )
        if request.target == "tensorrt":
            agreement = _build_plan(request, p, tower, feeds, references[tower], dtype, progress)
            progress.console.print(
                f"  max |error| {agreement.max_abs_error:.2e}, min cosine {agreement.min_cosine:.8f}"
            )
        agreements.append(agreement)
    with progress.step(f"write Triton models to {request.repository}"):
        models = _write_models(request, p)
    worst = max(agreements, key=lambda a: a.max_abs_error)
    return ExportResult(p, worst, models)


def _clear_engine_dir(request: ExportRequest, version_dir: Path) -> None:
    """Python-hosted engines keep model.py + runtime/; TensorRT needs only the plan."""
    leftovers = {
        "local": (),
        "onnxruntime": ("model.py", "runtime"),
        "tensorrt": ("model.py", "runtime", "model.onnx", "model.onnx.data"),
    }[request.target]
    for leftover in leftovers:
        path = version_dir / leftover
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def _behind_host(request: ExportRequest, p: Plan, host: repo.mc.ModelConfig, tower: str) -> repo.mc.ModelConfig:
    """For GME on a native backend: write the tower's engine model and make `host` its BLS caller."""
    if not request.behind_host(p):
        return host
    engine_dir = request.engine_dir(tower, p)
    io = repo.graph_io(engine_dir / "model.onnx")
    engine = repo.gme_engine_config(engine_dir.parent.name, io, request.target, request.on_gpu)
    repo.write_config(engine_dir.parent, engine)
    return repo.gme_host(host, engine)


def _write_models(request: ExportRequest, p: Plan) -> tuple[Path, ...]:
    image_ensemble = f"{request.name}_image" if "image" in p.spec.towers else ""
    card = repo.ModelCard(
        name=request.name,
        dimension=p.dimension,
        max_tokens=p.layout.max_length,
        hf_id=request.hf_id,
        aliases=request.aliases,
        modalities=p.spec.towers,
        image_ensemble=image_ensemble,
        fuses_modalities=p.spec.fuses_modalities,
        vocab_size=p.tokenizer.get_vocab_size(with_added_tokens=True),
        query_template=bool(p.query_template),
    )
    serving = request.serving
    pre_dir = request.repository / f"{request.name}_preprocess"
    enc_dir = request.repository / f"{request.name}_encoder"
    ens_dir = request.repository / request.name
    prompt = Prompt(p.query_template, p.default_instruction, p.document_template)
    repo.write_config(pre_dir, repo.preprocess_config(request.name, p.layout, serving, prompt))
    repo.install_python_model(pre_dir / "1", "preprocess_model")
    p.tokenizer.save(str(pre_dir / "1" / "tokenizer.json"))
    image_embeds = p.dimension if p.vision is not None else None
    host_target = "local" if request.behind_host(p) else request.target  # GME: Python hosts pack ragged batches
    encoder = repo.encoder_config(request.name, p.dimension, host_target, serving, request.on_gpu, image_embeds)
    repo.write_config(enc_dir, _behind_host(request, p, encoder, "text"))
    models = [ens_dir, pre_dir, enc_dir]
    if image_ensemble:
        img_pre = request.repository / f"{image_ensemble}_preprocess"
        vis_dir = request.repository / f"{request.name}_vision"
        img_ens = request.repository / image_ensemble
        if p.vision is not None:  # GME: fused items, the LM shared with text
            assert p.image_token_id is not None
            pre = repo.gme_image_preprocess_config(request.name, p.layout, serving, prompt, p.vision, p.image_token_id)
            repo.write_config(img_pre, pre)
            repo.install_python_model(img_pre / "1", "gme_image_preprocess_model")
            p.tokenizer.save(str(img_pre / "1" / "tokenizer.json"))
            vision = repo.gme_vision_config(
                request.name, p.dimension, host_target, serving, request.on_gpu, request.vision_patches_per_call
            )
            repo.write_config(vis_dir, _behind_host(request, p, vision, "image"))
            repo.write_config(img_ens, repo.gme_image_ensemble_config(request.name, p.dimension, serving))
        else:  # CLIP: its own image tower
            assert p.image is not None
            repo.write_config(img_pre, repo.image_preprocess_config(request.name, p.image, serving))
            repo.install_python_model(img_pre / "1", "image_preprocess_model")
            vision = repo.vision_config(request.name, p.dimension, p.image, request.target, serving, request.on_gpu)
            repo.write_config(vis_dir, vision)
            repo.write_config(img_ens, repo.image_ensemble_config(request.name, p.dimension, serving))
        models += [img_ens, img_pre, vis_dir]
    for engine_dir in models[2::3]:
        if host_target == "local":
            repo.install_python_model(engine_dir / "1", "onnx_encoder_model")
        else:
            _clear_engine_dir(request, engine_dir / "1")
    if request.behind_host(p):
        for tower in p.spec.towers:
            _clear_engine_dir(request, request.engine_dir(tower, p))
            models.append(request.engine_dir(tower, p).parent)
    repo.write_config(ens_dir, repo.ensemble_config(card, serving))
    check_backend_rules(request, p, models)
    return tuple(models)


def check_backend_rules(request: ExportRequest, p: Plan, models: list[Path]) -> None:
    """Every written config against the rules of the backend that will load it (export/backend_rules.py)."""
    profile_max_batch = request.tensorrt_profile(p).max_batch if request.target == "tensorrt" else None
    found = [v for m in models for v in violations(repo.parse_config(m / "config.pbtxt"), profile_max_batch)]
    if found:
        raise ExportError("generated configs their backend would refuse: " + "; ".join(found))

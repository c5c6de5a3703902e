"""The export pipeline: plan → ONNX per tower → fatal validation → (TensorRT) → model repository; for the
`torch` target: plan → weights beside each host → its PyTorch graph validated → model repository.

Generic over the family declarations (`export/families/`): each tower of the plan's family says
what its graph takes, how it is validated and which Triton models serve it.
"""

from __future__ import annotations

import multiprocessing
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from contract import EMBEDDING
from export import repository as repo
from export.backend_rules import violations
from export.checkpoint import Plan
from export.errors import ExportError, ValidationError
from export.graph import export_onnx, graph_io, torch_outputs
from export.heads import Agreement, Outputs, check
from export.request import EXTERNAL_DATA_BYTES, ONNX_RUNTIMES, Dtype, ExportRequest
from export.tensorrt import build_engine, check_tensorrt, run_engine
from export.torch_graphs import load_graphs
from export.towers.base import Tower, TritonModel
from export.towers.engines import torch_params
from export.validation import cuda_onnxruntime, onnx_session, tolerance


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


Checks = list[tuple[dict[str, np.ndarray], Outputs]]  # (validation feeds, PyTorch's outputs) of one tower


def _export_graphs(
    request: ExportRequest, dtype: Dtype
) -> tuple[dict[str, Checks], dict[str, list[Outputs]], tuple[float, ...]]:
    """Load the weights once (in `dtype`), compute each tower's references, and export ONNX; for the
    `torch` target, install the weights beside each host and run its served graph instead.

    Returns each tower's validation batches with their PyTorch references, for the `torch` target the
    served graph's outputs on them, and the int8 calibration ranges of the text tower's vectors."""
    quiet_libraries()
    progress = Progress()
    p = request.plan()
    # A `torch --gpu` export computes its reference on the GPU it will serve from, when this machine has one
    # (a 7B decoder in fp16 on the CPU takes minutes); every other target's on the CPU, as before.
    device = "cuda" if request.target == "torch" and request.gpu and torch.cuda.is_available() else "cpu"
    with progress.step(f"load {p.model_type} weights in {dtype} and compute the PyTorch reference on {device}"):
        graphs = load_graphs(p.transformer_dir, p.family, p.graph_settings, p.attention, dtype)
        graphs = {name: graph.to(device) for name, graph in graphs.items()}
        sets = {t.name: t.feed_sets(p, graphs) for t in p.family.towers}
        heads = {t.name: t.head.names for t in p.family.towers}
        references = {t: [(f, torch_outputs(g, heads[t], f)) for f in sets[t]] for t, g in graphs.items()}
    ranges = calibrated_ranges(p, graphs, progress)
    if request.target == "torch":
        del graphs
        if device == "cuda":
            torch.cuda.empty_cache()
        return references, _served_torch_outputs(request, p, references, progress), ranges
    n_bytes = sum(t.numel() * t.element_size() for g in graphs.values() for t in g.parameters())
    external = request.external_data if request.external_data is not None else n_bytes > EXTERNAL_DATA_BYTES
    for tower in p.family.towers:
        graph = graphs[tower.name]
        samples, dynamic = tower.samples(p)
        size = sum(t.numel() * t.element_size() for t in graph.parameters())
        with progress.step(
            f"export the {tower.name} tower to ONNX ({size / 1e6:.0f} MB of {dtype} weights"
            f"{', external data' if external else ''})"
        ):
            path = tower.engine_dir(request) / "model.onnx"
            export_onnx(graph, path, samples, dynamic, external, tower.head.names)
            check_io(tower, p, path)
    return references, {}, ranges


CALIBRATION_TEXTS = Path(__file__).with_name("calibration_texts.txt")
CALIBRATION_ROWS = 256


def calibrated_ranges(p: Plan, graphs: dict[str, torch.nn.Module], progress: Progress) -> tuple[float, ...]:
    """The int8 / uint8 ranges of the text tower's vectors: each dimension's minimum, then each one's
    maximum, over the first 256 of the shipped calibration texts (sentences of Python's own documentation)
    embedded as documents, as sentence-transformers' `quantize_embeddings` derives them from its
    `calibration_embeddings`; empty for a tower that returns no vector."""
    tower = p.family.text_tower
    if EMBEDDING not in tower.head.names:
        return ()
    texts = CALIBRATION_TEXTS.read_text().splitlines()[:CALIBRATION_ROWS]
    with progress.step(f"calibrate int8 ranges on {len(texts)} texts"):
        vectors = np.concatenate(
            [
                torch_outputs(graphs[tower.name], tower.head.names, feed)[EMBEDDING]
                for feed in tower.timing_batches(p, texts, 32)
            ]
        )
    return tuple(float(v) for v in np.concatenate([vectors.min(axis=0), vectors.max(axis=0)]))


def _served_torch_outputs(
    request: ExportRequest, p: Plan, references: dict[str, Checks], progress: Progress
) -> dict[str, list[Outputs]]:
    """Install the weights beside each `torch` host and run the graph it will serve, built as the host
    builds it (from the weights and its config's parameters), on the validation batches."""
    import gc

    from runtime.torch_session import TorchSession

    gc.collect()
    device = "cuda" if request.gpu and torch.cuda.is_available() else "cpu"
    outputs = {}
    for tower in p.family.towers:
        version_dir = tower.engine_dir(request)
        with progress.step(f"install the weights beside the {tower.name} host ({version_dir})"):
            repo.install_weights(p.transformer_dir, version_dir, p.family.weight_files)
        with progress.step(f"run the {tower.name} host's PyTorch graph on {device}"):
            session = TorchSession.load(version_dir, torch_params(tower, p, request), device)
            names = list(tower.head.names)
            outputs[tower.name] = [
                dict(zip(names, session.run(names, feeds), strict=True)) for feeds, _ in references[tower.name]
            ]
            del session
            gc.collect()
    return outputs


def check_io(tower: Tower, p: Plan, path: Path) -> None:
    """The exported graph takes and returns exactly what the tower declares (the configs are built from it)."""
    declared = tuple((t.name, t.data_type, t.dims) for io in tower.engine_io(p) for t in io)
    found = tuple((t.name, t.data_type, t.dims) for io in graph_io(path) for t in io)
    if declared != found:
        raise ExportError(f"the exported {tower.name} graph's inputs and outputs {found} differ from {declared}")


def _build_plan(
    request: ExportRequest,
    p: Plan,
    tower: Tower,
    checks: Checks,
    dtype: Dtype,
    progress: Progress,
) -> Agreement:
    work_dir = tower.engine_dir(request)
    shapes = tower.tensorrt_shapes(p, request.tensorrt_profile(p), request)
    with progress.step(f"build the {tower.name} TensorRT plan {shapes}"):
        build_engine(work_dir / "model.onnx", work_dir / "model.plan", shapes, request.workspace_mib)
    with progress.step(f"validate the {tower.name} TensorRT plan against PyTorch ({_batches(checks)})"):
        outputs, memory = run_engine(work_dir / "model.plan", [feeds for feeds, _ in checks])
        agreement = _worst(tower, checks, outputs, tolerance(p.family.tolerance, dtype))
    progress.console.print(f"  {tower.name} engine: {memory}")
    return agreement


def _export_auto(request: ExportRequest, progress: Progress) -> ExportResult:
    """`--target auto`: time each CPU engine this machine runs well against its fidelity gate
    (export/engine_choice.py), then export the fastest that passes; should its full validation refuse it
    (another tower, another batch), the next fastest."""
    from export.engine_choice import card_figures, choose, cpu_flags, ranked, table

    with progress.step("read checkpoint for --target auto"):
        request.check(request.plan())
    with progress.step("time each engine this CPU runs on fixed texts, against its fidelity gate"):
        trials = _timed_trials(request, cpu_flags())
    chosen = choose(trials)
    for line in table(trials, chosen):
        progress.console.print(line)
    for trial in ranked(trials):  # the chosen one first
        c = trial.candidate
        fixed = replace(request, target=c.target, dtype=c.dtype, engine_candidates=card_figures(trials))
        try:
            return export(fixed, progress)
        except ValidationError as exc:
            progress.console.print(f"  {c.engine} refused by the full validation ({exc}); the next fastest")
    raise ExportError("no engine candidate passed the full validation")


def _timed_trials(request: ExportRequest, flags: frozenset[str]) -> list:
    """Every candidate's trial, measured in a child process (the weights are loaded there)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_quietly_measured, request, flags).result()


def _quietly_measured(request: ExportRequest, flags: frozenset[str]) -> list:
    from export.engine_choice import measure

    quiet_libraries()
    return measure(request, flags)


def _validated_session(request: ExportRequest, path: Path, dtype: Dtype):
    """The engine that will serve the ONNX graph, to validate it: OpenVINO in the served precision for the
    `openvino` target (its graph stays fp32), else ONNX Runtime on the graph as exported."""
    if request.target == "openvino":
        from runtime.onnx_encoder import open_onnx

        return open_onnx(str(path), ONNX_RUNTIMES[request.target], dtype)
    return onnx_session(path, dtype)


def _batches(checks: Checks) -> str:
    """`input_ids 5×70, …, image_embeds 0×1536`: the shapes of each validation batch."""
    return "; ".join(
        ", ".join(f"{name} {'×'.join(map(str, a.shape))}" for name, a in feeds.items()) for feeds, _ in checks
    )


def _worst(tower: Tower, checks: Checks, outputs: list[Outputs], limits: tuple[float, float]) -> Agreement:
    """Every batch within `limits` by the tower's head (raises on the first that is not); the worst agreement."""
    agreements = [
        check(tower.head.agreement(reference, out), *limits)
        for (_, reference), out in zip(checks, outputs, strict=True)
    ]
    return max(agreements, key=lambda a: a.max_abs_error)


def export(request: ExportRequest, progress: Progress | None = None) -> ExportResult:
    """Export `request.checkpoint` and write its Triton models; raises on any failure."""
    progress = progress or Progress()
    quiet_libraries()
    if request.target == "auto":
        return _export_auto(request, progress)
    with progress.step(f"read checkpoint {request.checkpoint}"):
        p = request.plan()
        request = request.fitted(p)
        request.check(p)
        if request.target == "tensorrt":
            check_tensorrt()
    dtype = request.resolved_dtype(p)
    towers = p.family.towers
    output = p.family.output or f"{p.pooling} pooling, normalize={p.normalize}"
    progress.console.print(
        f"  {p.family.name}: towers {', '.join(t.name for t in towers)}, {output}, "
        f"{p.attention} attention ({p.attention_signal}), max {p.layout.max_length} tokens, {dtype}"
    )
    if request.target == "tensorrt":
        profile = request.tensorrt_profile(p)
        progress.console.print(
            f"  TensorRT profile: 1…{profile.max_batch} rows × 1…{profile.max_seq} tokens "
            f"({profile.max_batch * profile.max_seq} tokens in the largest call: TensorRT reserves activation "
            "memory for it; --max-length or --tensorrt-tokens change it)"
        )
    for tower in towers:
        for stale in ("model.onnx", "model.onnx.data", "model.plan"):
            (tower.engine_dir(request) / stale).unlink(missing_ok=True)
        if (tower.engine_dir(request) / repo.CHECKPOINT_DIR).is_dir():
            shutil.rmtree(tower.engine_dir(request) / repo.CHECKPOINT_DIR)
    # The weights live only in a child process, which exits before ONNX Runtime loads the graphs:
    # at no point are two copies of the model in memory.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        checks, served, ranges = pool.submit(_export_graphs, request, request.reference_dtype(p)).result()
    request = replace(request, int8_ranges=ranges)
    limits = tolerance(p.family.tolerance, dtype, request.cpu_autocast(p))
    agreements = []
    for tower in towers:
        tower_checks = checks[tower.name]
        if request.target == "torch":
            with progress.step(f"validate the {tower.name} host's PyTorch graph against the reference"):
                agreement = _worst(tower, tower_checks, served[tower.name], limits)
            progress.console.print(
                f"  max |error| {agreement.max_abs_error:.2e}, min cosine {agreement.min_cosine:.8f}"
            )
        elif dtype == "bfloat16" and request.target == "tensorrt" and not cuda_onnxruntime():
            progress.console.print(
                f"  {tower.name}: ONNX Runtime has no bf16 CPU kernels; the TensorRT plan is validated"
            )
        else:
            engine = "OpenVINO" if request.target == "openvino" else "ONNX Runtime"
            with progress.step(f"validate the {tower.name} tower: {engine} against PyTorch ({_batches(tower_checks)})"):
                session = _validated_session(request, tower.engine_dir(request) / "model.onnx", dtype)
                names = list(tower.head.names)
                found = [dict(zip(names, session.run(names, f), strict=True)) for f, _ in tower_checks]
                agreement = _worst(tower, tower_checks, found, limits)
                del session
            progress.console.print(
                f"  max |error| {agreement.max_abs_error:.2e}, min cosine {agreement.min_cosine:.8f}"
            )
        if request.target == "tensorrt":
            agreement = _build_plan(request, p, tower, tower_checks, dtype, progress)
            progress.console.print(
                f"  max |error| {agreement.max_abs_error:.2e}, min cosine {agreement.min_cosine:.8f}"
            )
        agreements.append(agreement)
    with progress.step(f"write Triton models to {request.repository}"):
        models = write_models(request, p)
    worst = max(agreements, key=lambda a: a.max_abs_error)
    return ExportResult(p, worst, models)


def triton_models(request: ExportRequest, p: Plan) -> list[TritonModel]:
    """Every Triton model the family's towers need, in the order they are written."""
    return [model for tower in p.family.towers for model in tower.models(p, request)]


def write_models(request: ExportRequest, p: Plan) -> tuple[Path, ...]:
    """Write each model's config and files; a native engine's folder keeps only what its backend loads."""
    models = triton_models(request, p)
    check_backend_rules(request, p, [m.config for m in models])
    written = []
    for model in models:
        model_dir = request.repository / model.config.name
        repo.write_config(model_dir, model.config)
        if model.shell:
            repo.install_python_model(model_dir / "1", model.shell, model.graph_code)
        elif model.config.platform != "ensemble":
            repo.clear_for_native_backend(model_dir / "1", model.config)
        if model.tokenizer:
            p.tokenizer.save(str(model_dir / "1" / "tokenizer.json"))
        written.append(model_dir)
    return tuple(written)


def check_backend_rules(request: ExportRequest, p: Plan, configs: list) -> None:
    """Every config against the rules of the backend that will load it (export/backend_rules.py)."""
    profile_max_batch = request.tensorrt_profile(p).max_batch if request.target == "tensorrt" else None
    found = [v for c in configs for v in violations(c, profile_max_batch)]
    if found:
        raise ExportError("generated configs their backend would refuse: " + "; ".join(found))

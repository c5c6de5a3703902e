"""`--target auto`: the fastest engine for the CPU the export runs on, measured there, not assumed.

Which engine is fastest changes with the CPU: on an AVX2-only EPYC ONNX Runtime fp32 ran PyTorch's fp32
3× over; on a Xeon with AMX, PyTorch in bf16 runs ONNX Runtime fp32 about 2× over. So the export
measures. The candidates are those this CPU runs well: ONNX Runtime fp32 (`local`), OpenVINO fp32
(`openvino`), the family's PyTorch graph in fp32 (`torch`), and, where the CPU has bf16 instructions
(AMX or AVX-512 BF16), OpenVINO with bf16 inference precision and the PyTorch graph in bf16 under CPU
autocast (elsewhere bf16 is emulated, slower than fp32, and not tried). Each is checked against the
fp32 PyTorch reference on the validation batches with its own gate (fp32: the family's tolerance,
cosine ≥ 0.99999; bf16: cosine ≥ 0.9999), timed on the same length-sorted batches of fixed texts in
the same order, and the fastest that passes is exported. Its table goes to the console and into the
model's card (`/v1/models`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.request import ONNX_RUNTIMES, Dtype, ExportRequest, Target

BF16_FLAGS = ("amx_bf16", "avx512_bf16")
TIMING_TEXTS = 256  # texts of 5–60 words, in batches of `TIMING_ROWS` sorted by length
TIMING_ROWS = 32
TIMING_SECONDS = 4.0  # per candidate, after a warm-up batch: large models are timed on fewer batches
_WORDS = (
    "the of and to in is that it for on with as was at by an be this from or have are not which one all "
    "were they but when there can more their if will about each would so what up out into time has two "
    "model server embedding vector search query document triton engine batch token latency memory cpu "
    "river mountain city music garden history science language window winter market picture letter"
).split()


@dataclass(frozen=True)
class Candidate:
    target: Target
    dtype: Dtype

    @property
    def engine(self) -> str:
        """`local float32`, `torch bfloat16`: the target and dtype, as the card names the engine."""
        return f"{self.target} {self.dtype}"

    @property
    def runtime(self) -> str:
        return RUNTIMES[self.target]


RUNTIMES = {"local": "ONNX Runtime", "openvino": "OpenVINO", "torch": "PyTorch"}


@dataclass(frozen=True)
class Trial:
    """One candidate measured: its speed, and its agreement with the fp32 reference against its gate."""

    candidate: Candidate
    texts_per_second: float
    min_cosine: float
    max_abs_error: float
    passed: bool
    failure: str = ""  # why the candidate could not run this graph, if it could not (never chosen)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "flags":
                return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def candidates(flags: frozenset[str]) -> list[Candidate]:
    """The engines worth timing on a CPU with these flags, in the order ties are broken."""
    found = [Candidate("local", "float32"), Candidate("openvino", "float32"), Candidate("torch", "float32")]
    if any(flag in flags for flag in BF16_FLAGS):  # torch bf16 last: its cast changes the graph in place
        found += [Candidate("openvino", "bfloat16"), Candidate("torch", "bfloat16")]
    return found


def ranked(trials: list[Trial]) -> list[Trial]:
    """The trials that passed their gate, fastest first (the earlier candidate on a tie)."""
    return sorted((t for t in trials if t.passed), key=lambda t: (-t.texts_per_second, trials.index(t)))


def choose(trials: list[Trial]) -> Trial:
    """The fastest trial that passed its gate; ONNX Runtime fp32 passes by construction (it is the
    served graph the `local` export validates), so there is always one."""
    passed = ranked(trials)
    if not passed:
        raise ValueError("no engine candidate passed its fidelity gate")
    return passed[0]


def interleaved(batches: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Length-sorted batches in the order shortest, longest, second shortest, …: a timing cut short by
    `TIMING_SECONDS` (a large model) still sees every length, not only the short ones."""
    order = []
    for low, high in zip(range(len(batches)), range(len(batches) - 1, -1, -1), strict=True):
        if low > high:
            break
        order += [low] if low == high else [low, high]
    return [batches[i] for i in order]


def timing_texts(n: int = TIMING_TEXTS, seed: int = 0) -> list[str]:
    """`n` fixed sentences of 5–60 words (the same on every machine)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(5, 60))) for _ in range(n)]


def timed(run: Callable[[dict[str, np.ndarray]], object], batches: list[dict[str, np.ndarray]]) -> float:
    """Texts per second of `run` over `batches` in order, after one warm-up batch, for at most
    `TIMING_SECONDS` (a large model is timed on the first batches of the same order, `interleaved`)."""
    run(batches[0])
    rows, start = 0, time.perf_counter()
    for batch in batches:
        run(batch)
        rows += len(batch["input_ids"])
        if time.perf_counter() - start > TIMING_SECONDS:
            break
    return rows / (time.perf_counter() - start)


def card_figures(trials: list[Trial]) -> tuple[str, ...]:
    """Every candidate's figures as the card keeps them: `engine:texts/s:min cosine:pass|fail`."""
    return tuple(
        f"{t.candidate.engine}:{t.texts_per_second:.1f}:{t.min_cosine:.7f}:{'pass' if t.passed else 'fail'}"
        for t in trials
    )


def table(trials: list[Trial], chosen: Trial) -> list[str]:
    """The console's table of the trials, the chosen one marked."""
    lines = ["  target   runtime       dtype      texts/s   min cosine   gate"]
    for t in trials:
        c, mark = t.candidate, "  ← chosen" if t is chosen else ""
        gate = "pass" if t.passed else f"FAILED ({t.failure})" if t.failure else "REFUSED"
        lines.append(
            f"  {c.target:<8} {c.runtime:<13} {c.dtype:<9} {t.texts_per_second:8.1f}   {t.min_cosine:.7f}    "
            f"{gate}{mark}"
        )
    return lines


def measure(request: ExportRequest, flags: frozenset[str]) -> list[Trial]:
    """Every candidate's trial, measured in this process on the text tower (run it in a child: the
    weights are loaded here). A candidate that cannot run the graph is a failed trial, not an error."""
    import tempfile

    from export.graph import export_onnx, torch_outputs
    from export.heads import within
    from export.torch_graphs import load_graphs
    from export.validation import tolerance

    p = request.plan()
    tower = p.family.text_tower
    graphs = load_graphs(p.transformer_dir, p.family, p.graph_settings, p.attention, "float32")
    graph = graphs["text"]  # the one timed; GME's text batches hold features of its image tower
    names = tower.head.names
    checks = [(f, torch_outputs(graph, names, f)) for f in tower.feed_sets(p, graphs)]
    del graphs
    batches = interleaved(tower.timing_batches(p, timing_texts(), TIMING_ROWS))
    trials = []
    with tempfile.TemporaryDirectory() as folder:
        onnx = Path(folder) / "model.onnx"  # one fp32 graph for ONNX Runtime and OpenVINO
        samples, dynamic = tower.samples(p)
        export_onnx(graph, onnx, samples, dynamic, False, names)
        for candidate in candidates(flags):
            limits = tolerance(p.family.tolerance, candidate.dtype, cpu_autocast=candidate.dtype != "float32")
            try:
                run = _runner(candidate, graph, onnx, names)
                outputs = [run(f) for f, _ in checks]
                speed = timed(run, batches)
            except Exception as exc:  # noqa: BLE001 - an engine that cannot run this graph is not a candidate
                reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
                trials.append(Trial(candidate, 0.0, float("nan"), float("nan"), False, reason))
                continue
            found = [tower.head.agreement(ref, out) for (_, ref), out in zip(checks, outputs, strict=True)]
            passed = all(within(a, *limits) for a in found)
            worst_cos, worst_err = min(a.min_cosine for a in found), max(a.max_abs_error for a in found)
            trials.append(Trial(candidate, speed, worst_cos, worst_err, passed))
    return trials


def _runner(candidate: Candidate, graph, onnx: Path, names: tuple[str, ...]) -> Callable[[dict], dict]:
    """A function from a batch's feeds to the candidate's outputs by name."""
    import torch

    from export.graph import torch_outputs
    from runtime.onnx_encoder import open_onnx
    from runtime.torch_session import cast_for_autocast

    if candidate.target in ONNX_RUNTIMES:
        session = open_onnx(str(onnx), ONNX_RUNTIMES[candidate.target], candidate.dtype)
        return lambda feed: dict(zip(names, session.run(list(names), feed), strict=True))
    autocast = candidate.dtype == "bfloat16"
    if autocast:  # in place: the bf16 candidate comes last
        cast_for_autocast(graph)

    def run(feed: dict) -> dict:
        with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
            return torch_outputs(graph, names, feed)

    return run

"""The fastest engine for the machine (issue 36): `--target auto`'s candidates, gates and choice, with the
timings stubbed for every kind of machine; the bf16 CPU host and the auto export through real Triton."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest

from contract import EncoderHostParams, EnsembleCard, TorchGraphParams, parameters
from export import build
from export.build import Progress, export
from export.engine_choice import (
    Candidate,
    Trial,
    candidates,
    card_figures,
    choose,
    cpu_flags,
    timing_texts,
)
from export.heads import Agreement, within
from export.request import ExportRequest
from export.validation import CPU_AUTOCAST_TOLERANCE
from launcher import default_model

AVX2 = frozenset({"avx", "avx2", "fma"})
AVX512_BF16 = AVX2 | {"avx512f", "avx512_vnni", "avx512_bf16"}
AMX = AVX512_BF16 | {"amx_tile", "amx_int8", "amx_bf16"}
ORT, TORCH, BF16 = Candidate("local", "float32"), Candidate("torch", "float32"), Candidate("torch", "bfloat16")
OV, OV_BF16 = Candidate("openvino", "float32"), Candidate("openvino", "bfloat16")


def trial(candidate: Candidate, speed: float, cosine: float = 0.9999999, passed: bool = True) -> Trial:
    return Trial(candidate, speed, cosine, 1e-5, passed)


def test_the_candidates_follow_the_cpus_instructions(tmp_path: Path) -> None:
    assert candidates(AVX2) == [ORT, OV, TORCH]  # bf16 would be emulated: slower than fp32, not tried
    assert candidates(AVX512_BF16) == [ORT, OV, TORCH, OV_BF16, BF16]
    assert candidates(AMX) == [ORT, OV, TORCH, OV_BF16, BF16]
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16 amx_tile\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "amx_bf16", "amx_tile"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize(
    ("machine", "trials", "chosen"),
    [
        # The first development machine, an AVX2-only EPYC: ONNX Runtime fp32 ran PyTorch fp32 3× over.
        ("AVX2 EPYC", [trial(ORT, 150.0), trial(TORCH, 50.0)], ORT),
        # The AMX Xeon of issue 36: PyTorch bf16 366.9 texts/s, ONNX Runtime fp32 153.9.
        ("AMX Xeon", [trial(ORT, 153.9), trial(TORCH, 190.0), trial(BF16, 366.9, 0.999928)], BF16),
        # bf16 fastest but beyond its gate: never chosen.
        ("bf16 refused", [trial(ORT, 153.9), trial(TORCH, 190.0), trial(BF16, 366.9, 0.9997, passed=False)], TORCH),
        # A tie goes to the earlier candidate (ONNX Runtime, the one the project measured longest).
        ("tie", [trial(ORT, 100.0), trial(TORCH, 100.0)], ORT),
        # The AMX Xeon again, with OpenVINO (2026-12-06, `python -m export … --target auto`).
        (
            "AMX Xeon, OpenVINO",
            [
                trial(ORT, 210.0),
                trial(OV, 266.1),
                trial(TORCH, 261.2),
                trial(OV_BF16, 672.6, 0.9999837),
                trial(BF16, 518.1, 0.9999833),
            ],
            OV_BF16,
        ),
        # OpenVINO could not compile the graph: a failed trial, never chosen, whatever its figures.
        (
            "OpenVINO failed",
            [trial(ORT, 210.0), Trial(OV, 0.0, float("nan"), float("nan"), False, "unsupported operation")],
            ORT,
        ),
    ],
)
def test_the_fastest_engine_that_passes_its_gate_is_chosen(machine: str, trials: list[Trial], chosen) -> None:
    assert choose(trials).candidate == chosen, machine
    assert choose(list(reversed(trials))).candidate == chosen or machine == "tie"


def test_each_candidate_has_its_own_gate() -> None:
    """fp32: the family's tolerance (cosine ≥ 0.99999); bf16 under CPU autocast: cosine ≥ 0.9999."""
    assert CPU_AUTOCAST_TOLERANCE[1] == 0.9999
    assert within(Agreement(1.2e-3, 0.99998), *CPU_AUTOCAST_TOLERANCE)
    assert not within(Agreement(1.2e-3, 0.99985), *CPU_AUTOCAST_TOLERANCE)
    assert not within(Agreement(float("nan"), 1.0), *CPU_AUTOCAST_TOLERANCE)
    assert not within(Agreement(1e-5, 0.99999 - 1e-7), 1e-4, 0.99999)
    with pytest.raises(ValueError, match="no engine candidate passed"):
        choose([trial(BF16, 500.0, 0.99, passed=False)])


def test_the_timing_texts_are_the_same_everywhere() -> None:
    texts = timing_texts()
    assert len(texts) == 256 and texts == timing_texts()
    assert all(5 <= len(t.split()) <= 60 for t in texts)


def params_of(model_dir: Path) -> dict[str, str]:
    """A generated model's config parameters, as the runtime and the adapter read them."""
    from google.protobuf import json_format

    from export.repository import parse_config

    config = parse_config(model_dir / "config.pbtxt")
    return parameters(json_format.MessageToDict(config, preserving_proto_field_name=True))


@pytest.mark.parametrize(
    ("machine", "trials", "expected"),
    [
        ("AVX2 EPYC", [trial(ORT, 150.0), trial(TORCH, 50.0)], "local float32"),
        ("AMX Xeon", [trial(ORT, 153.9), trial(TORCH, 190.0), trial(BF16, 366.9, 0.99998)], "torch bfloat16"),
        ("AMX Xeon, OpenVINO", [trial(ORT, 210.0), trial(OV_BF16, 672.6, 0.99998)], "openvino bfloat16"),
    ],
)
def test_auto_exports_the_chosen_engine(machine, trials, expected, tmp_path: Path, monkeypatch) -> None:
    """The selection with the timings stubbed, both orders of machine: the export writes the chosen engine,
    and its card names it and keeps every candidate's figures."""
    monkeypatch.setattr(build, "_timed_trials", lambda request, flags: trials)
    repo = tmp_path / "repo"
    export(ExportRequest(default_model.checkpoint(), repo, "m", target="auto"), Progress())
    card = EnsembleCard.from_parameters(params_of(repo / "m"))
    assert card.engine == expected, machine
    assert card.engine_candidates == card_figures(trials)
    encoder = repo / "m_encoder" / "1"
    host = EncoderHostParams.from_parameters(params_of(repo / "m_encoder"))
    if expected == "local float32":
        assert (encoder / "model.onnx").exists() and not (encoder / "checkpoint").exists()
        assert (host.onnx_runtime, host.onnx_dtype) == ("onnxruntime", "float32")
    elif expected == "openvino bfloat16":  # the fp32 graph, compiled by OpenVINO in bf16; one thread per instance
        assert (encoder / "model.onnx").exists() and not (encoder / "checkpoint").exists()
        assert (host.onnx_runtime, host.onnx_dtype, host.intra_op_threads) == ("openvino", "bfloat16", 1)
        assert host.max_padding == 2.0  # OpenVINO's calls cost more than its padding (export/towers/engines.py)
        graph = onnx.load(str(encoder / "model.onnx"), load_external_data=False)
        kinds = {t.data_type for t in graph.graph.initializer}
        assert onnx.TensorProto.FLOAT in kinds and not kinds & {onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
    else:
        assert (encoder / "checkpoint").is_dir() and not (encoder / "model.onnx").exists()
        assert TorchGraphParams.from_parameters(params_of(repo / "m_encoder")).dtype == "bfloat16"


def test_auto_refuses_a_gpu_or_a_dtype(tmp_path: Path) -> None:
    from export.errors import ExportError

    for request in (
        ExportRequest(default_model.checkpoint(), tmp_path, "m", target="auto", gpu=True),
        ExportRequest(default_model.checkpoint(), tmp_path, "m", target="auto", dtype="bfloat16"),
    ):
        with pytest.raises(ExportError, match="--target auto measures the CPU engines"):
            export(request, Progress())


def test_the_measurement_checks_every_candidate_against_the_fp32_reference() -> None:
    """The real measurement on the default model, every candidate forced (bf16 is emulated where the CPU
    lacks the instructions: only its speed depends on them)."""
    from export.engine_choice import measure

    trials = measure(ExportRequest(default_model.checkpoint(), Path("/nonexistent"), "m"), AMX)
    assert [t.candidate for t in trials] == [ORT, OV, TORCH, OV_BF16, BF16]
    for t in trials:
        assert t.texts_per_second > 0 and not t.failure
        assert t.passed == (t.min_cosine >= (0.99999 if t.candidate.dtype == "float32" else 0.9999)), t
    assert all(t.passed and t.min_cosine > 0.999999 for t in trials[:3])


TEXTS = ["a cat sits on the mat", "Triton serves embeddings", "Ünïcödé and 中文", "the quick brown fox " * 40]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(default_model.checkpoint()), device="cpu")
    return model.encode(TEXTS, normalize_embeddings=True)


@pytest.mark.e2e
@pytest.mark.parametrize("target", ["torch-bf16", "openvino-bf16", "auto"])
def test_the_chosen_engine_serves_through_triton(target: str, reference, tmp_path_factory) -> None:
    """bf16 on the CPU through real Triton (fp32 weights, bf16 matrix products, fp32 pooling), and whatever
    `auto` picks on this machine: each within its own gate of sentence-transformers, its card in /v1/models."""
    from launcher.stack import running_stack

    repo = tmp_path_factory.mktemp("repo")
    kind = {
        "torch-bf16": {"target": "torch", "dtype": "bfloat16"},
        "openvino-bf16": {"target": "openvino", "dtype": "bfloat16"},
        "auto": {"target": "auto"},
    }[target]
    export(ExportRequest(default_model.checkpoint(), repo, "m", hf_id=default_model.HF_ID, **kind), Progress())
    with running_stack(repo, tmp_path_factory.mktemp("work")) as stack:
        r = httpx.post(f"{stack.adapter_url}/v1/embeddings", json={"model": "m", "input": TEXTS}, timeout=60)
        assert r.status_code == 200, r.text
        card = httpx.get(f"{stack.adapter_url}/v1/models/m", timeout=10).json()
    served = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
    cosine = float((served * reference).sum(axis=1).min())
    gate = 0.9999 if card["engine"].endswith("bfloat16") else 0.99999
    assert cosine >= gate, (card["engine"], cosine)
    if target == "auto":
        engines = [c["engine"] for c in card["engine_candidates"]]
        assert engines[:3] == ["local float32", "openvino float32", "torch float32"] and card["engine"] in engines
        chosen = next(c for c in card["engine_candidates"] if c["engine"] == card["engine"])
        assert chosen["gate"] == "pass" and all(
            chosen["texts_per_second"] >= c["texts_per_second"]
            for c in card["engine_candidates"]
            if c["gate"] == "pass"
        )
    else:
        assert card["engine"] == target.replace("-bf16", " bfloat16") and card["engine_candidates"] == []


def test_a_timing_cut_short_still_sees_every_length() -> None:
    from export.engine_choice import interleaved

    assert [interleaved(list(range(n))) for n in range(6)] == [
        [],
        [0],
        [0, 1],
        [0, 2, 1],
        [0, 3, 1, 2],
        [0, 4, 1, 3, 2],
    ]


def test_the_measurement_takes_a_family_whose_text_batches_carry_image_features(tmp_path: Path) -> None:
    """GME's text validation batches hold its image tower's features: the measurement loaded the text
    tower alone and `--target auto` failed for it (`make serve MODEL=…gme…`)."""
    from export.engine_choice import measure
    from tests import tiny

    trials = measure(ExportRequest(tiny.qwen2_vl(tmp_path / "gme"), tmp_path / "repo", "gme"), AVX2)
    assert [t.candidate for t in trials] == [ORT, OV, TORCH]
    assert all(t.passed for t in trials), trials


def test_openvino_runs_the_onnx_graph_as_onnx_runtime_does(tmp_path: Path) -> None:
    """The `openvino` target's session: the fp32 graph in fp32 agrees with ONNX Runtime to fp32 rounding, in
    bf16 within the bf16 gate, output by name; it refuses a dtype it does not serve on the CPU."""
    from runtime.onnx_encoder import open_onnx

    repo = tmp_path / "repo"
    export(ExportRequest(default_model.checkpoint(), repo, "m"), Progress())
    path = str(repo / "m_encoder" / "1" / "model.onnx")
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 20000, (3, 17))
    mask = np.ones_like(ids)
    mask[1, 9:] = 0  # a shorter row, right-padded
    feed = {"input_ids": ids, "attention_mask": mask}
    (expected,) = open_onnx(path).run(["EMBEDDING"], feed)
    for dtype, gate in (("float32", 0.999999), ("bfloat16", CPU_AUTOCAST_TOLERANCE[1])):
        (found,) = open_onnx(path, "openvino", dtype).run(["EMBEDDING"], feed)
        assert found.shape == expected.shape == (3, 384) and found.dtype == np.float32
        assert float((found * expected).sum(axis=1).min()) >= gate, dtype
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        open_onnx(path, "openvino", "float16")
    with pytest.raises(ValueError, match="no ONNX engine"):
        open_onnx(path, "onnxruntime", "bfloat16")


@pytest.mark.parametrize("fields", [{"gpu": True}, {"dtype": "float16"}])
def test_openvino_serves_on_the_cpu_in_fp32_or_bf16(fields: dict, tmp_path: Path) -> None:
    from export.errors import ExportError

    with pytest.raises(ExportError, match="--target openvino serves on the CPU"):
        export(ExportRequest(default_model.checkpoint(), tmp_path, "m", target="openvino", **fields), Progress())

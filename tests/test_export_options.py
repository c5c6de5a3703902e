"""Export options checked against each other and the checkpoint before the long work, and every generated
config checked against the rules of the Triton backend that will load it (no GPU needed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from contract import TorchGraphParams
from export import build
from export import repository as repo
from export.__main__ import parse_args, serving_from_args
from export.backend_rules import violations
from export.build import Progress, export
from export.errors import ExportError
from export.request import ExportRequest, Profile, Serving
from graphs import builder_at
from launcher import default_model

MINILM_LIMIT = 256  # all-MiniLM-L6-v2's max_seq_length


@pytest.fixture(scope="module")
def plan():
    return ExportRequest(default_model.checkpoint(), Path("r"), "m").plan()


def request(**fields) -> ExportRequest:
    return ExportRequest(default_model.checkpoint(), fields.pop("repository", Path("unused")), "m", **fields)


def test_the_profile_sequence_range_defaults_to_the_token_limit(plan) -> None:
    """It was 1 … 1,048,576 when --profile gave only the batch range."""
    assert plan.layout.max_length == MINILM_LIMIT
    assert request(target="tensorrt", profile="1,8,64").tensorrt_profile(plan) == Profile(1, 8, 64, 1, 256, 256)
    assert request(target="tensorrt").tensorrt_profile(plan) == Profile(1, 8, 64, 1, 256, 256)
    args = parse_args(["ckpt", "--target", "tensorrt", "--profile", "1,8,32"])
    assert serving_from_args(args).max_batch_size == 32  # the config follows the profile's batch range


def test_a_small_batch_size_gets_a_profile_that_fits(plan) -> None:
    small = request(target="tensorrt", serving=Serving(max_batch_size=4))
    assert small.tensorrt_profile(plan) == Profile(1, 4, 4, 1, 256, 256)
    small.check(plan)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"target": "tensorrt", "profile": "1,8,32"},
            "--max-batch-size 64 exceeds the TensorRT profile's max batch 32",
        ),
        (
            {"target": "tensorrt", "profile": "1,8,64:1,64,128"},
            "the TensorRT profile's max sequence 128 is below the token limit 256",
        ),
        ({"target": "local", "dtype": "bfloat16"}, "a bfloat16 local engine needs ONNX Runtime's CUDA provider"),
        ({"target": "onnxruntime", "dtype": "bfloat16", "gpu": True}, "needs ONNX Runtime's CUDA provider"),
    ],
)
def test_conflicting_options_fail_before_the_export_starts(plan, monkeypatch, tmp_path, fields, message) -> None:
    with pytest.raises(ExportError, match=message):
        request(**fields).check(plan)

    def never(*_args, **_kwargs):
        raise AssertionError("the long work started")

    monkeypatch.setattr(build, "_export_graphs", never)
    with pytest.raises(ExportError, match=message):
        export(request(repository=tmp_path, **fields), Progress())
    assert not list(tmp_path.rglob("model.onnx"))


def test_a_missing_tensorrt_fails_before_the_export_starts(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setattr(build, "_export_graphs", lambda *a, **k: pytest.fail("the long work started"))
    with pytest.raises(ExportError, match="needs the `tensorrt` package"):
        export(request(repository=tmp_path, target="tensorrt"), Progress())


@pytest.mark.parametrize(
    ("target", "gpu"),
    [
        ("local", False),
        ("onnxruntime", False),
        ("onnxruntime", True),
        ("tensorrt", False),
        ("torch", False),
        ("torch", True),
    ],
)
@pytest.mark.parametrize("family", ["minilm", "clip", "bge-m3"])
def test_generated_configs_follow_their_backends_rules(family, target, gpu, tmp_path) -> None:
    """The configs an export writes, for every target: TensorRT gets GPU instances even without --gpu."""
    from tests import tiny
    from tests.tiny.bge_m3 import bge_m3

    checkpoint = {
        "minilm": default_model.checkpoint,
        "clip": lambda: tiny.clip(tmp_path / "clip"),
        "bge-m3": lambda: bge_m3(tmp_path / "bge-m3"),
    }[family]()
    req = ExportRequest(checkpoint, tmp_path / "repo", family, target=target, gpu=gpu)
    p = req.plan()
    models = build.write_models(req, p)  # raises on any violation
    configs = [repo.parse_config(m / "config.pbtxt") for m in models]
    engines = [c for c in configs if c.name.endswith(("_encoder", "_vision"))]
    assert len(engines) == (2 if family == "clip" else 1)
    if family == "bge-m3":  # three outputs from one engine, the sparse one as each token's id and weight
        (ensemble,) = [c for c in configs if c.platform == "ensemble"]
        names = ["EMBEDDING", "SPARSE_IDS", "SPARSE_WEIGHTS", "TOKEN_VECTORS", "TOKEN_COUNT"]
        assert [t.name for t in ensemble.output] == names
        assert [list(t.dims) for t in engines[0].output] == [[p.dimension], [-1], [-1], [-1, p.dimension]]
    for config in engines:
        kinds = {g.kind for g in config.instance_group}
        on_gpu = target == "tensorrt" or gpu
        assert kinds == {mc.ModelInstanceGroup.KIND_GPU if on_gpu else mc.ModelInstanceGroup.KIND_CPU}
        if target == "tensorrt":
            assert config.platform == "tensorrt_plan"
            assert config.max_batch_size == req.tensorrt_profile(p).max_batch  # within the plan's profile
        if target == "torch":  # the host of the family's PyTorch graph, on the GPU in the family's dtype
            params = TorchGraphParams.from_parameters({k: v.string_value for k, v in config.parameters.items()})
            tower = p.family.towers[0 if config.name.endswith("_encoder") else 1]
            assert config.backend == "python" and builder_at(params.graph) is tower.graph
            assert params.auto_class == p.family.auto_class and params.decoder == p.family.decoder
            assert params.dtype == (p.family.gpu_dtype if gpu else "float32")
            engine_inputs, engine_outputs = tower.engine_io(p)
            assert params.inputs == tuple(t.name for t in engine_inputs)
            assert params.outputs == tuple(t.name for t in engine_outputs)
    profile = req.tensorrt_profile(p).max_batch if target == "tensorrt" else None
    assert [v for c in configs for v in violations(c, profile)] == []


def test_the_python_backends_rules() -> None:
    """KIND_MODEL is not a Python-backend placement; ragged inputs need a batching model; a torch host's
    parameters must read back."""
    req = request(target="torch", gpu=True)
    config = next(m.config for m in build.triton_models(req, req.plan()) if m.config.name == "m_encoder")
    assert violations(config) == []
    config.instance_group[0].kind = mc.ModelInstanceGroup.KIND_MODEL
    config.max_batch_size = 0
    config.parameters["normalize"].string_value = "yes"
    found = violations(config)
    assert any("not KIND_MODEL" in v for v in found) and any("ragged input input_ids" in v for v in found)
    assert any("'normalize' must be true or false" in v for v in found), found


def test_the_rules_catch_what_triton_would_refuse() -> None:
    req = request(target="tensorrt", gpu=True, serving=Serving(max_batch_size=64))
    config = next(m.config for m in build.triton_models(req, req.plan()) if m.config.name == "m_encoder")
    assert violations(config, profile_max_batch=64) == []
    assert violations(config, profile_max_batch=32) == [
        "m_encoder: max_batch_size 64 exceeds the engine's profile max batch 32"
    ]
    config.instance_group[0].kind = mc.ModelInstanceGroup.KIND_CPU
    config.input[0].data_type = mc.TYPE_STRING
    found = violations(config, 64)
    assert any("need GPU instances" in v for v in found) and any("no mapping for input_ids" in v for v in found)


def test_an_empty_name_and_the_tensorrt_workspace(monkeypatch) -> None:
    """compose's export passes `--name "$MODEL_NAME"`: unset, it is refused, not exported as `model`."""
    from export import __main__ as cli

    seen = []
    monkeypatch.setattr(cli, "export", lambda request, progress: seen.append(request))
    assert cli.main(["ckpt", "--name", ""]) == 1 and seen == []
    assert cli.main(["ckpt", "--name", "e5", "--target", "tensorrt", "--workspace-mib", "4096"]) == 0
    assert seen[0].workspace_mib == 4096 and seen[0].name == "e5"


@pytest.mark.parametrize("family", ["e5", "gte", "gme", "clip"])
def test_tiny_checkpoints_have_a_command_line(family, tmp_path) -> None:
    """`python -m export.tiny` exited 0 and printed nothing; now it writes a checkpoint the export accepts."""
    import subprocess

    folder = tmp_path / family
    run = subprocess.run(
        [sys.executable, "-m", "tests.tiny", family, str(folder)], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert f"make serve MODEL={folder} NAME={family}" in run.stdout
    assert ExportRequest(folder, tmp_path / "repo", family).plan().layout.max_length > 0
    assert subprocess.run([sys.executable, "-m", "tests.tiny"], capture_output=True, timeout=60).returncode == 2


def test_the_export_prints_only_its_own_lines(tmp_path) -> None:
    """It printed torchvision, FutureWarning and UserWarning lines, and wrapped paths at 80 columns in a pipe."""
    import subprocess

    from tests import tiny

    checkpoint = tiny.clip(tmp_path / ("a-folder-name-long-enough-that-an-80-column-console-would-wrap-it" * 2))
    repository = tmp_path / "repository"
    run = subprocess.run(
        [sys.executable, "-m", "export", str(checkpoint), "--name", "c", "--repository", str(repository)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    output = run.stdout + run.stderr
    for noise in ("torchvision", "Warning", "warn(", "%|"):
        assert noise not in output, output
    assert f"✓ read checkpoint {checkpoint} (" in output  # on one line
    assert all(line.startswith(("✓", "  ", "c is ready")) for line in output.splitlines() if line), output

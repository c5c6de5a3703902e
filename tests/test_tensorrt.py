"""What of the TensorRT path can be checked without a GPU: profiles and the generated config."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2 as mc

from contract import EncoderHostParams, parameters
from export import build
from export.configs import numpy_dtype
from export.errors import ExportError
from export.families.gme import FAMILY as GME
from export.request import TENSORRT_TOKENS_PER_CALL, ExportRequest, Profile, Serving
from export.tensorrt import build_engine
from launcher import default_model
from runtime.images import ClipImageSpec
from runtime.qwen2vl import VisionSpec

LANGUAGE, VISION = GME.towers


def request(**fields) -> ExportRequest:
    return ExportRequest(default_model.checkpoint(), Path("r"), "m", **fields)


def gme_plan(max_pixels: int = 1280 * 28 * 28) -> SimpleNamespace:
    """What the GME towers read of a plan, at the real model's width."""
    image = VisionSpec(256 * 28 * 28, max_pixels, (0.5,) * 3, (0.5,) * 3)
    return SimpleNamespace(image=image, dimension=1536, family=GME, layout=SimpleNamespace(max_length=4096))


def encoder(req: ExportRequest) -> mc.ModelConfig:
    return next(m.config for m in build.triton_models(req, req.plan()) if m.config.name == "m_encoder")


def test_profile_parse_and_shapes() -> None:
    p = Profile.parse("1,8,32:1,512,4096", max_seq=4096)
    assert p == Profile(1, 8, 32, 1, 512, 4096)
    assert p.shapes() == {name: ((1, 1), (8, 512), (32, 4096)) for name in ("input_ids", "attention_mask")}
    assert Profile.parse("1,4,16", max_seq=128) == Profile(1, 4, 16, 1, 128, 128)


@pytest.mark.parametrize("text", ["2,4,16", "1,8,32:2,512,4096"])
def test_profile_minimum_is_one(text: str) -> None:
    """`--profile 2,4,16` was accepted, and then every one-row request was refused at inference."""
    with pytest.raises(ValueError, match="minimum batch and sequence must be 1"):
        Profile.parse(text, max_seq=4096)


def test_image_profile_keeps_the_tower_size() -> None:
    from export.families.clip import ClipImageGraph
    from export.towers.fixed_image import FixedImageTower

    plan = SimpleNamespace(image=ClipImageSpec(336, 336, 336, (0.5,) * 3, (0.5,) * 3))
    assert FixedImageTower(ClipImageGraph).tensorrt_shapes(plan, Profile(1, 8, 32), request()) == {
        "pixel_values": ((1, 3, 336, 336), (8, 3, 336, 336), (32, 3, 336, 336))
    }


@pytest.mark.parametrize("text", ["1,8,4", "1,0,2", "1,2,4:1,9000,4096"])
def test_profile_rejects_disordered_bounds(text: str) -> None:
    with pytest.raises(ValueError, match="must satisfy"):
        Profile.parse(text, max_seq=4096)


def test_tensorrt_config_batch_stays_within_the_default_profile() -> None:
    serving = Serving(max_batch_size=32, encoder_max_batch_size=512)
    trt = ExportRequest(default_model.checkpoint(), Path("r"), "m", target="tensorrt", serving=serving)  # no --gpu
    config = encoder(trt)  # TensorRT is GPU all the same
    assert config.max_batch_size == trt.tensorrt_profile(trt.plan()).max_batch == 32  # the plan's profile
    assert config.platform == "tensorrt_plan" and config.instance_group[0].kind == config.instance_group[0].KIND_GPU
    assert not any(t.allow_ragged_batch for t in config.input)
    local = ExportRequest(default_model.checkpoint(), Path("r"), "m", serving=serving)
    assert encoder(local).max_batch_size == 512


def test_build_without_tensorrt_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails as on a machine without TensorRT
    with pytest.raises(ExportError, match="needs the `tensorrt` package and an NVIDIA GPU"):
        build_engine(tmp_path / "model.onnx", tmp_path / "model.plan", Profile().shapes())


def test_gme_profiles_cover_what_the_hosts_pack() -> None:
    from runtime.onnx_encoder import VISION_PATCHES_PER_CALL, Packing

    packed = VISION_PATCHES_PER_CALL["gpu"]
    trt = request(target="tensorrt")
    vision = VISION.tensorrt_shapes(gme_plan(max_pixels=1280 * 28 * 28), Profile(), trt)
    assert vision["pixel_values"][1:] == ((packed, 1176), (5120, 1176))  # the authors' largest image runs alone
    assert vision["segment_ids"][0] == (4,)  # one image of 2×2 patches
    assert VISION.tensorrt_shapes(gme_plan(max_pixels=1024 * 14**2), Profile(), trt)["position_ids"][2] == (packed, 2)
    text = LANGUAGE.tensorrt_shapes(gme_plan(), Profile(max_batch=64, max_seq=4096), trt)
    assert text["input_ids"][2] == (64, 4096)
    assert text["image_embeds"] == ((0, 1536), (256, 1536), (Packing.max_tokens, 1536))  # text-only calls: 0 rows
    # The text host never sends the engine more rows than its profile takes.
    assert LANGUAGE.call_rows(gme_plan(), request(target="tensorrt", profile="1,8,64")) == Packing.max_rows
    assert LANGUAGE.call_rows(gme_plan(), request(target="tensorrt", profile="1,4,8")) == 8
    assert LANGUAGE.call_rows(gme_plan(), request(target="onnxruntime", profile="1,4,8")) == Packing.max_rows


def test_gme_text_engine_is_validated_without_image_rows(gme_checkpoint: Path, tmp_path: Path) -> None:
    """Text-only GME calls send the text engine `image_embeds` with 0 rows: the export validates that
    batch too (ONNX Runtime here; the TensorRT plan the same way on the GPU host)."""
    from export.validation import onnx_session

    req = ExportRequest(gme_checkpoint, tmp_path, "g")
    checks = build._export_graphs(req, "float32")[0]["text"]
    assert [f["image_embeds"].shape[0] > 0 for f, _ in checks] == [True, False]
    (with_image, image_ref), (text_only, text_ref) = checks
    rows = len(text_ref["EMBEDDING"])
    assert text_only["input_ids"].shape[0] == rows < with_image["input_ids"].shape[0]
    # the same texts, with or without the image
    np.testing.assert_allclose(text_ref["EMBEDDING"], image_ref["EMBEDDING"][:rows], atol=1e-5)
    session = onnx_session(LANGUAGE.engine_dir(req) / "model.onnx", "float32")
    outputs = [{"EMBEDDING": session.run(None, feeds)[0]} for feeds, _ in checks]
    agreement = build._worst(LANGUAGE, checks, outputs, (1e-4, 0.9999))
    assert agreement.max_abs_error < 1e-4
    assert "image_embeds 0×" in build._batches(checks).split("; ")[1]


@pytest.mark.parametrize("target", ["onnxruntime", "tensorrt"])
def test_gme_engines_sit_behind_python_hosts(target: str, gme_checkpoint: Path) -> None:
    req = ExportRequest(gme_checkpoint, Path("r"), "g", target=target, gpu=True)
    models = {m.config.name: m for m in build.triton_models(req, req.plan())}
    engine = models["g_vision_engine"].config
    assert models["g_vision_engine"].shell == "" and models["g_vision"].shell == "encoder_host_model"
    assert engine.max_batch_size == 0 and not engine.HasField("dynamic_batching")
    assert engine.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert (engine.backend, engine.platform) == (
        ("onnxruntime", "") if target == "onnxruntime" else ("", "tensorrt_plan")
    )
    host = models["g_vision"].config
    assert host.backend == "python" and "onnx_file" not in host.parameters
    assert host.dynamic_batching.max_queue_delay_microseconds == Serving().queue_delay_us
    from google.protobuf import json_format

    params = EncoderHostParams.from_parameters(
        parameters(json_format.MessageToDict(host, preserving_proto_field_name=True))
    )
    assert params.engine_model == "g_vision_engine"
    assert params.engine_dtypes() == {"pixel_values": "float32", "position_ids": "int64", "segment_ids": "int64"}
    assert params.max_patches == 4096
    text_host = EncoderHostParams.from_parameters(
        parameters(json_format.MessageToDict(models["g_encoder"].config, preserving_proto_field_name=True))
    )
    assert text_host.engine_dtypes() == {"input_ids": "int64", "attention_mask": "int64", "image_embeds": "float32"}


def test_engine_input_types_map_to_numpy_or_fail() -> None:
    """An fp16 or bf16 engine input is fed as such; an unmapped type is an error, never a silent float32."""
    assert [numpy_dtype(t) for t in (mc.TYPE_FP32, mc.TYPE_FP16, mc.TYPE_BF16, mc.TYPE_INT64)] == [
        "float32",
        "float16",
        "bfloat16",
        "int64",
    ]
    with pytest.raises(ValueError, match="TYPE_UINT8"):
        numpy_dtype(mc.TYPE_UINT8)


@pytest.mark.parametrize(
    ("target", "gpu", "packed"),
    [("local", False, 1024), ("onnxruntime", False, 1024), ("onnxruntime", True, 4096), ("tensorrt", False, 4096)],
)
def test_gme_vision_packing_follows_where_the_engine_runs(target: str, gpu: bool, packed: int) -> None:
    assert VISION.patches_per_call(ExportRequest(Path("c"), Path("r"), "g", target=target, gpu=gpu)) == packed


@pytest.mark.parametrize(("limit", "rows"), [(512, 64), (4096, 8), (8192, 4), (32768, 1), (131072, 1)])
def test_default_profile_fits_a_token_budget(limit: int, rows: int) -> None:
    """TensorRT reserves activation memory for the profile's largest shape: 64 rows × Qwen3's 32,768
    tokens would not fit any GPU. The default keeps every length and takes the rows that fit."""
    from export.families.qwen3 import FAMILY as QWEN3

    plan = SimpleNamespace(layout=SimpleNamespace(max_length=limit), family=QWEN3)
    req = request(target="tensorrt", batch_from_profile=True)
    profile = req.tensorrt_profile(plan)
    assert (profile.max_batch, profile.max_seq) == (rows, limit)
    assert profile.max_batch * profile.max_seq <= max(TENSORRT_TOKENS_PER_CALL, limit)
    fitted = req.fitted(plan)
    assert fitted.serving.max_batch_size == rows and fitted.tensorrt_profile(plan) == profile
    assert request(target="local", batch_from_profile=True).fitted(plan).serving == Serving()
    wider = request(target="tensorrt", tensorrt_tokens=4 * limit, batch_from_profile=True)
    assert wider.tensorrt_profile(plan).max_batch == 4  # --tensorrt-tokens: four rows at every limit


def test_an_explicit_batch_beyond_the_budget_is_refused_before_the_build() -> None:
    """`--max-batch-size 64` on a 32,768-token model: refused with what to change, not built."""
    req = request(target="tensorrt", max_length=512, tensorrt_tokens=4096)  # MiniLM at 512: 8 rows fit
    with pytest.raises(ExportError, match=r"exceeds the TensorRT profile's max batch 8.*--tensorrt-tokens"):
        req.check(req.plan())
    fitted = replace(req, batch_from_profile=True)
    fitted.fitted(fitted.plan()).check(fitted.plan())


def test_engines_behind_a_host_keep_the_served_batch(gme_checkpoint: Path) -> None:
    """GME's hosts pack their own calls: the ensembles keep their batch, the text host sends the
    engine what its profile takes (1,800 tokens a row: 18 rows in 32,768 tokens)."""
    req = ExportRequest(gme_checkpoint, Path("r"), "g", target="tensorrt", batch_from_profile=True)
    plan = req.plan()
    assert req.fitted(plan) is req
    assert LANGUAGE.call_rows(plan, req) == TENSORRT_TOKENS_PER_CALL // plan.layout.max_length == 18


class FakeTensorRT(SimpleNamespace):
    """The parts of `tensorrt` the export calls, each answering what TensorRT answers on failure: None."""

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            pass

    def __init__(self, fail: str) -> None:
        super().__init__(__version__="10.13.3.9", fail=fail)
        self.NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=0)
        self.MemoryPoolType = SimpleNamespace(WORKSPACE=0)
        self.TensorIOMode = SimpleNamespace(OUTPUT="output")

    def _answer(self, what: str, thing):
        return None if what == self.fail else thing

    def Builder(self, logger):  # noqa: N802 (TensorRT's names)
        fake = self
        parser_ok = SimpleNamespace(parse_from_file=lambda path: True, num_errors=0)
        config = SimpleNamespace(
            set_memory_pool_limit=lambda *a: None,
            add_optimization_profile=lambda p: -1 if fake.fail == "add_profile" else 0,
        )
        self.OnnxParser = lambda network, logger: fake._answer("parser", parser_ok)
        return self._answer(
            "builder",
            SimpleNamespace(
                create_network=lambda flags: fake._answer("network", object()),
                create_builder_config=lambda: fake._answer("config", config),
                create_optimization_profile=lambda: fake._answer("profile", SimpleNamespace(set_shape=lambda *a: None)),
                build_serialized_network=lambda n, c: fake._answer("build", b"plan"),
            ),
        )

    def Runtime(self, logger):  # noqa: N802
        fake = self
        engine = SimpleNamespace(
            create_execution_context=lambda: fake._answer("context", object()),
            device_memory_size_v2=3 << 30,
            num_io_tensors=1,
            get_tensor_name=lambda i: "EMBEDDING",
            get_tensor_mode=lambda name: "output",
        )
        return self._answer(
            "runtime", SimpleNamespace(deserialize_cuda_engine=lambda plan: fake._answer("engine", engine))
        )


@pytest.mark.parametrize("fail", ["builder", "network", "parser", "config", "profile", "add_profile", "build"])
def test_every_none_the_builder_returns_is_an_export_error(fail: str, tmp_path, monkeypatch) -> None:
    """TensorRT's Python API returns None where it fails (its log says why); the export used to go on
    and die with an AttributeError."""
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT(fail))
    with pytest.raises(ExportError, match="TensorRT"):
        build_engine(tmp_path / "model.onnx", tmp_path / "model.plan", Profile().shapes())
    assert not (tmp_path / "model.plan").exists()


@pytest.mark.parametrize(
    ("fail", "says"), [("runtime", "runtime"), ("engine", "deserialise"), ("context", "GPU memory")]
)
def test_every_none_the_runtime_returns_is_an_export_error(fail: str, says: str, tmp_path, monkeypatch) -> None:
    """A plan that does not deserialise, or a context that does not fit the GPU (context creation
    returns None when the profile's activation memory cannot be had), stops the export saying so."""
    from export.tensorrt import run_engine

    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT(fail))
    (tmp_path / "model.plan").write_bytes(b"plan")
    with pytest.raises(ExportError, match=says):
        run_engine(tmp_path / "model.plan", [])


def test_engine_memory_is_reported_from_tensorrts_figures(tmp_path, monkeypatch) -> None:
    from export.tensorrt import EngineMemory, run_engine

    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT(fail=""))
    (tmp_path / "model.plan").write_bytes(b"p" * (1 << 20))
    outputs, memory = run_engine(tmp_path / "model.plan", [])
    assert outputs == [] and memory == EngineMemory(1 << 20, 3 << 30)
    assert str(EngineMemory(15 << 30, 3 << 30)) == (
        "15.0 GiB plan (weights) + 3.0 GiB activations at the profile's largest shape: "
        "about 18.0 GiB of GPU memory per instance"
    )

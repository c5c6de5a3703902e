"""What of the TensorRT path can be checked without a GPU: profiles and the generated config."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from export import build
from export.build import ExportRequest
from export.configs import numpy_dtype
from export.errors import ExportError
from export.families.gme import FAMILY as GME
from export.serving import Serving
from export.tensorrt import Profile, build_engine
from launcher import default_model
from runtime.contract import EncoderHostParams, parameters
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
    assert LANGUAGE.problems(gme_plan(), request(target="tensorrt", profile="1,8,64")) == []
    (problem,) = LANGUAGE.problems(gme_plan(), request(target="tensorrt", profile="1,4,8"))
    assert "max batch" in problem


@pytest.mark.parametrize("target", ["onnxruntime", "tensorrt"])
def test_gme_engines_sit_behind_python_hosts(target: str, gme_checkpoint: Path) -> None:
    req = ExportRequest(gme_checkpoint, Path("r"), "g", target=target, gpu=True)
    models = {m.config.name: m for m in build.triton_models(req, req.plan())}
    engine = models["g_vision_engine"].config
    assert models["g_vision_engine"].shell == "" and models["g_vision"].shell == "onnx_encoder_model"
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

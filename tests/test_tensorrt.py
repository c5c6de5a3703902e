"""What of the TensorRT path can be checked without a GPU: profiles and the generated config."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from export import repository as repo
from export.errors import ExportError
from export.tensorrt import Profile, build_engine


def test_profile_parse_and_shapes() -> None:
    p = Profile.parse("1,8,32:1,512,4096", max_seq=4096)
    assert p == Profile(1, 8, 32, 1, 512, 4096)
    assert p.shapes() == {name: ((1, 1), (8, 512), (32, 4096)) for name in ("input_ids", "attention_mask")}
    assert Profile.parse("2,4,16", max_seq=128) == Profile(2, 4, 16, 1, 128, 128)


def test_image_profile_keeps_the_tower_size() -> None:
    from export.tensorrt import image_shapes

    assert image_shapes(Profile(1, 8, 32), 336, 336) == {
        "pixel_values": ((1, 3, 336, 336), (8, 3, 336, 336), (32, 3, 336, 336))
    }


@pytest.mark.parametrize("text", ["8,4,16", "0,1,2", "1,2,4:1,9000,4096"])
def test_profile_rejects_disordered_bounds(text: str) -> None:
    with pytest.raises(ValueError, match="must satisfy"):
        Profile.parse(text, max_seq=4096)


def test_tensorrt_config_batch_stays_within_the_default_profile() -> None:
    from export.build import ExportRequest
    from launcher import default_model

    serving = repo.Serving(max_batch_size=32, encoder_max_batch_size=512)
    config = repo.encoder_config("m", 4096, "tensorrt", serving, gpu=False)  # no --gpu: TensorRT is GPU all the same
    request = ExportRequest(default_model.checkpoint(), Path("r"), "m", target="tensorrt", serving=serving)
    assert config.max_batch_size == request.tensorrt_profile(request.plan()).max_batch == 32  # the plan's profile
    assert config.platform == "tensorrt_plan" and config.instance_group[0].kind == config.instance_group[0].KIND_GPU
    assert not any(t.allow_ragged_batch for t in config.input)
    assert repo.encoder_config("m", 4096, "local", serving, gpu=False).max_batch_size == 512


def test_build_without_tensorrt_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails as on a machine without TensorRT
    with pytest.raises(ExportError, match="needs the `tensorrt` package and an NVIDIA GPU"):
        build_engine(tmp_path / "model.onnx", tmp_path / "model.plan", Profile().shapes())


def test_gme_profiles_cover_what_the_hosts_pack() -> None:
    from export.tensorrt import gme_shapes
    from runtime.onnx_encoder import VISION_PATCHES_PER_CALL, Packing

    packed = VISION_PATCHES_PER_CALL["gpu"]
    vision = gme_shapes("image", Profile(), 1536, packed, largest_image=1280 * 28 * 28 // 14**2)
    assert vision["pixel_values"][1:] == ((packed, 1176), (5120, 1176))  # the authors' largest image runs alone
    assert vision["segment_ids"][0] == (4,)  # one image of 2×2 patches
    assert gme_shapes("image", Profile(), 1536, packed, largest_image=1024)["position_ids"][2] == (packed, 2)
    text = gme_shapes("text", Profile(max_batch=64, max_seq=4096), 1536, packed, 5120)
    assert text["input_ids"][2] == (64, 4096)
    assert text["image_embeds"] == ((0, 1536), (256, 1536), (Packing.max_tokens, 1536))  # text-only calls: 0 rows
    with pytest.raises(ExportError, match="max batch"):
        gme_shapes("text", Profile(max_batch=8), 1536, packed, 5120)


@pytest.mark.parametrize("target", ["onnxruntime", "tensorrt"])
def test_gme_engines_sit_behind_python_hosts(target: str) -> None:
    from runtime.params import EncoderParams

    io = (
        [
            repo.GraphTensor("pixel_values", repo.mc.TYPE_FP32, (-1, 1176)),
            repo.GraphTensor("x", repo.mc.TYPE_FP16, (-1,)),
        ],
        [repo.GraphTensor("IMAGE_EMBEDS", repo.mc.TYPE_FP32, (-1, 1536))],
    )
    engine = repo.gme_engine_config("g_vision_engine", io, target, gpu=True)
    assert engine.max_batch_size == 0 and not engine.HasField("dynamic_batching")
    assert engine.instance_group[0].kind == repo.mc.ModelInstanceGroup.KIND_GPU
    assert (engine.backend, engine.platform) == (
        ("onnxruntime", "") if target == "onnxruntime" else ("", "tensorrt_plan")
    )
    serving = repo.Serving()
    host = repo.gme_host(repo.gme_vision_config("g", 1536, "local", serving, False, max_patches=4096), engine)
    assert host.backend == "python" and "onnx_file" not in host.parameters
    assert host.dynamic_batching.max_queue_delay_microseconds == serving.queue_delay_us
    from google.protobuf import json_format

    params = EncoderParams.from_config(json_format.MessageToDict(host, preserving_proto_field_name=True), Path("1"))
    assert params.engine_model == "g_vision_engine"
    assert params.engine_inputs == {"pixel_values": "float32", "x": "float16"}
    assert params.max_patches == 4096


@pytest.mark.parametrize(
    ("target", "gpu", "packed"),
    [("local", False, 1024), ("onnxruntime", False, 1024), ("onnxruntime", True, 4096), ("tensorrt", False, 4096)],
)
def test_gme_vision_packing_follows_where_the_engine_runs(target: str, gpu: bool, packed: int) -> None:
    from export.build import ExportRequest

    assert ExportRequest(Path("c"), Path("r"), "g", target=target, gpu=gpu).vision_patches_per_call == packed

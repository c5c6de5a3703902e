"""What the export decides for decoder checkpoints, before any export work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from export.checkpoint import attention_of, plan
from export.families import family_for
from export.request import ExportRequest
from tests import tiny

MISTRAL_EMBEDDER, QWEN2_EMBEDDER = family_for("mistral"), family_for("qwen2")


def test_default_lengths_and_dtypes(tmp_path) -> None:
    e5 = plan(tiny.mistral(tmp_path / "e5", positions=32768))
    gte = plan(tiny.qwen2(tmp_path / "gte", positions=131072))
    assert (e5.layout.max_length, gte.layout.max_length) == (4096, 8192)
    assert (MISTRAL_EMBEDDER.gpu_dtype, QWEN2_EMBEDDER.gpu_dtype) == ("float16", "bfloat16")
    assert e5.prompts.query_template == "Instruct: {instruction}\nQuery: {text}"
    assert plan(tiny.mistral(tmp_path / "short", positions=512)).layout.max_length == 512  # clamped to positions


def test_attention_signals(tmp_path) -> None:
    gte = tiny.qwen2(tmp_path / "gte", gte=True)
    plain = tiny.qwen2(tmp_path / "plain", gte=False)
    assert plan(gte).attention == "bidirectional" and "auto_map" in plan(gte).attention_signal
    assert plan(plain).attention == "causal"  # a plain Qwen2 embedder stays causal
    assert ExportRequest(gte, Path("r"), "g", attention="causal").plan().attention == "causal"  # the flag wins
    cfg = json.loads((gte / "config.json").read_text())
    assert attention_of(gte, {**cfg, "is_causal": True}, QWEN2_EMBEDDER, None) == ("causal", "config.json is_causal")
    assert plan(tiny.mistral(tmp_path / "e5")).attention == "causal"


@pytest.mark.parametrize("dtype", ["bfloat16"])
def test_bf16_cannot_be_validated_without_a_gpu(tmp_path, dtype) -> None:
    from export.build import Progress, export
    from export.errors import ExportError
    from export.request import ExportRequest

    ckpt = tiny.qwen2(tmp_path / "gte")
    # Refused before the export starts (it was after the ONNX export), saying where bf16 can run.
    with pytest.raises(ExportError, match="a bfloat16 local engine needs ONNX Runtime's CUDA provider"):
        export(
            ExportRequest(checkpoint=ckpt, repository=tmp_path / "repo", name="g", max_length=64, dtype=dtype),
            Progress(),
        )
    assert not list((tmp_path / "repo").rglob("model.onnx"))


def test_fp16_export_for_the_gpu_targets_validates_and_keeps_fp32_io(tmp_path) -> None:
    """e5's GPU precision: fp16 weights inside, int64 ids in and fp32 EMBEDDING out."""
    import onnx

    from export.build import Progress, export
    from export.repository import parse_config
    from export.request import ExportRequest

    ckpt = tiny.mistral(tmp_path / "e5")
    result = export(
        ExportRequest(
            checkpoint=ckpt, repository=tmp_path / "repo", name="e5", max_length=64, target="onnxruntime", gpu=True
        ),
        Progress(),
    )
    assert result.agreement.min_cosine >= 0.999
    model = onnx.load(str(tmp_path / "repo" / "e5_encoder" / "1" / "model.onnx"))
    weights = {i.data_type for i in model.graph.initializer if len(i.dims) == 2}
    assert weights == {onnx.TensorProto.FLOAT16}
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [onnx.TensorProto.INT64] * 2
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    config = parse_config(tmp_path / "repo" / "e5_encoder" / "config.pbtxt")
    assert config.backend == "onnxruntime" and config.instance_group[0].kind == config.instance_group[0].KIND_GPU

"""Every generated config.pbtxt parses as Triton's ModelConfig and the ensemble wiring is consistent."""

from __future__ import annotations

from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from export import repository as repo
from runtime.params import EncoderParams, PreprocessParams
from runtime.text import TextLayout, make_buckets

LAYOUT = TextLayout((101,), (102,), 256, 0, make_buckets(256))
CARD = repo.ModelCard(name="m", dimension=384, max_tokens=256, hf_id="org/m", aliases=("mm",))


def check_ensemble(ensemble: mc.ModelConfig, steps: dict[str, mc.ModelConfig]) -> None:
    """Each step's maps name real tensors; every tensor a step reads is produced upstream or is an ensemble input."""
    available = {t.name for t in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        model = steps[step.model_name]
        inputs = {t.name: t for t in model.input}
        for key, value in step.input_map.items():
            assert key in inputs, f"{step.model_name} has no input {key}"
            assert value in available, f"{value} is not available before {step.model_name}"
        required = {n for n, t in inputs.items() if not t.optional}
        assert required <= set(step.input_map), f"{step.model_name} misses {required - set(step.input_map)}"
        outputs = {t.name for t in model.output}
        for key, value in step.output_map.items():
            assert key in outputs, f"{step.model_name} has no output {key}"
            available.add(value)
        assert model.max_batch_size >= ensemble.max_batch_size
    for out in ensemble.output:
        assert out.name in available, f"ensemble output {out.name} is produced by no step"


@pytest.mark.parametrize("target", repo.TARGETS)
def test_generated_configs_parse_and_wire(tmp_path: Path, target: str) -> None:
    serving = repo.Serving()
    configs = {
        "m": repo.ensemble_config(CARD, serving),
        "m_preprocess": repo.preprocess_config("m", LAYOUT, serving),
        "m_encoder": repo.encoder_config("m", 384, target, serving, gpu=target != "local"),
    }
    parsed = {}
    for name, config in configs.items():
        path = repo.write_config(tmp_path / name, config)
        parsed[name] = repo.parse_config(path)
        assert parsed[name].name == name
    check_ensemble(parsed["m"], parsed)
    encoder = parsed["m_encoder"]
    expected = {
        "local": ("python", "", ""),
        "onnxruntime": ("onnxruntime", "", "model.onnx"),
        "tensorrt": ("", "tensorrt_plan", "model.plan"),
    }[target]
    assert (encoder.backend, encoder.platform, encoder.default_model_filename) == expected
    assert encoder.dynamic_batching.max_queue_delay_microseconds == serving.queue_delay_us
    delay = parsed["m_preprocess"].dynamic_batching.max_queue_delay_microseconds
    assert delay == serving.preprocess_queue_delay_us


def test_runtime_reads_back_what_export_writes(tmp_path: Path) -> None:
    """The Python models parse the parameters the export generated (JSON as Triton passes it)."""
    from google.protobuf import json_format

    pre = json_format.MessageToDict(
        repo.preprocess_config("m", LAYOUT, repo.Serving()), preserving_proto_field_name=True
    )
    params = PreprocessParams.from_config(pre, tmp_path)
    assert params.layout == LAYOUT and params.default_truncate == "END"
    assert params.tokenizer_path == tmp_path / "tokenizer.json"
    enc = json_format.MessageToDict(
        repo.encoder_config("m", 384, "local", repo.Serving(), False), preserving_proto_field_name=True
    )
    assert EncoderParams.from_config(enc, tmp_path).output_name == "EMBEDDING"


def test_exported_repository_configs_parse(minilm_repository) -> None:
    root, _ = minilm_repository
    parsed = {p.parent.name: repo.parse_config(p) for p in root.glob("*/config.pbtxt")}
    assert set(parsed) == {"all-MiniLM-L6-v2", "all-MiniLM-L6-v2_preprocess", "all-MiniLM-L6-v2_encoder"}
    check_ensemble(parsed["all-MiniLM-L6-v2"], parsed)
    params = {k: v.string_value for k, v in parsed["all-MiniLM-L6-v2"].parameters.items()}
    assert params["hf_id"] == "sentence-transformers/all-MiniLM-L6-v2" and params["dimension"] == "384"

"""Every generated config.pbtxt parses as Triton's ModelConfig and the ensemble wiring is consistent."""

from __future__ import annotations

from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from contract import EncoderHostParams, EnsembleCard, TextParams, parameters
from export import build
from export import repository as repo
from export.request import ENGINE_TARGETS, ONNX_HOSTED_TARGETS, ExportRequest, Serving
from launcher import default_model
from runtime.text import TextLayout


def configs(target: str, gpu: bool = False, **fields) -> dict[str, mc.ModelConfig]:
    """The configs an export of the default model writes, by model name (no weights work)."""
    request = ExportRequest(default_model.checkpoint(), Path("unused"), "m", target=target, gpu=gpu, **fields)
    return {m.config.name: m.config for m in build.triton_models(request, request.plan())}


def as_triton_passes_it(config: mc.ModelConfig) -> dict:
    """A config as JSON, the form Triton hands a Python model's `initialize` and the adapter's listing."""
    from google.protobuf import json_format

    return json_format.MessageToDict(config, preserving_proto_field_name=True)


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


@pytest.mark.parametrize("target", ENGINE_TARGETS)
def test_generated_configs_parse_and_wire(tmp_path: Path, target: str) -> None:
    serving = Serving()
    parsed = {}
    for name, config in configs(target, gpu=target not in ONNX_HOSTED_TARGETS).items():
        path = repo.write_config(tmp_path / name, config)
        parsed[name] = repo.parse_config(path)
        assert parsed[name].name == name
    assert set(parsed) == {"m", "m_preprocess", "m_encoder"}
    check_ensemble(parsed["m"], parsed)
    encoder = parsed["m_encoder"]
    expected = {
        "local": ("python", "", ""),
        "openvino": ("python", "", ""),
        "torch": ("python", "", ""),
        "onnxruntime": ("onnxruntime", "", "model.onnx"),
        "tensorrt": ("", "tensorrt_plan", "model.plan"),
    }[target]
    assert (encoder.backend, encoder.platform, encoder.default_model_filename) == expected
    assert encoder.dynamic_batching.max_queue_delay_microseconds == serving.queue_delay_us
    delay = parsed["m_preprocess"].dynamic_batching.max_queue_delay_microseconds
    assert delay == serving.preprocess_queue_delay_us


def test_runtime_reads_back_what_export_writes() -> None:
    """The Python models parse the parameters the export generated (JSON as Triton passes it)."""
    written = configs("local")
    request = ExportRequest(default_model.checkpoint(), Path("unused"), "m")
    plan = request.plan()
    text = TextParams.from_parameters(parameters(as_triton_passes_it(written["m_preprocess"])))
    assert TextLayout.of(text) == plan.layout and text.default_truncate == "END"
    assert text.tokenizer == "tokenizer.json" and text == plan.text_params(request)
    encoder = as_triton_passes_it(written["m_encoder"])
    host = EncoderHostParams.from_parameters(parameters(encoder))
    assert encoder["output"][0]["name"] == "EMBEDDING" and host.onnx_file == "model.onnx"
    assert (host.max_rows, host.max_tokens, host.max_padding) == (32, 16384, 0.25)  # written, no longer implied
    card = EnsembleCard.from_parameters(parameters(as_triton_passes_it(written["m"])))
    assert card == plan.card(request) and card.vocab_size == 30522


def test_exported_repository_configs_parse(minilm_repository) -> None:
    root, _ = minilm_repository
    parsed = {p.parent.name: repo.parse_config(p) for p in root.glob("*/config.pbtxt")}
    assert set(parsed) == {"all-MiniLM-L6-v2", "all-MiniLM-L6-v2_preprocess", "all-MiniLM-L6-v2_encoder"}
    check_ensemble(parsed["all-MiniLM-L6-v2"], parsed)
    params = {k: v.string_value for k, v in parsed["all-MiniLM-L6-v2"].parameters.items()}
    assert params["hf_id"] == "sentence-transformers/all-MiniLM-L6-v2" and params["dimension"] == "384"


@pytest.fixture(scope="module")
def bert_reranker_checkpoint(tmp_path_factory) -> Path:
    from tests.tiny.cross_encoder import bert_reranker

    return bert_reranker(tmp_path_factory.mktemp("bert-reranker") / "bert-reranker")


@pytest.mark.parametrize("target", ENGINE_TARGETS)
def test_reranker_configs_parse_wire_and_pass_their_backend_rules(
    tmp_path: Path, target: str, bert_reranker_checkpoint: Path
) -> None:
    """A cross-encoder on every target: (TEXT, QUERY) → pair preprocessor → encoder → SCORE, with the
    token types the BERT tokenizer gives, and a card that says it reranks."""
    gpu = target not in ONNX_HOSTED_TARGETS  # the CPU-only targets; the others on a GPU
    request = ExportRequest(bert_reranker_checkpoint, tmp_path, "r", target=target, gpu=gpu)
    plan = request.plan()
    written = {m.config.name: m.config for m in build.triton_models(request, plan)}
    build.check_backend_rules(request, plan, list(written.values()))
    parsed = {name: repo.parse_config(repo.write_config(tmp_path / name, c)) for name, c in written.items()}
    check_ensemble(parsed["r"], parsed)
    assert [t.name for t in parsed["r"].input] == ["TEXT", "QUERY", "TRUNCATE", "MAX_DOC_TOKENS"]
    assert [t.name for t in parsed["r"].output] == ["SCORE", "TOKEN_COUNT"]
    assert [t.name for t in parsed["r_encoder"].input] == ["input_ids", "attention_mask", "token_type_ids"]
    card = EnsembleCard.from_parameters(parameters(as_triton_passes_it(parsed["r"])))
    assert (card.task, card.dimension, card.controls) == ("rerank", 1, ("TRUNCATE", "MAX_DOC_TOKENS"))
    if target == "tensorrt":
        shapes = plan.family.text_tower.tensorrt_shapes(plan, request.tensorrt_profile(plan), request)
        assert set(shapes) == {"input_ids", "attention_mask", "token_type_ids"}


def test_a_checkpoints_task_picks_its_family(bert_reranker_checkpoint: Path, tmp_path: Path) -> None:
    """A sequence classifier reranks; a plain causal LM embeds unless `--task rerank` says otherwise."""
    from export.__main__ import parse_args
    from tests.tiny.qwen3_reranker import qwen3_reranker

    assert ExportRequest(bert_reranker_checkpoint, tmp_path, "r").plan().family.name == "cross-encoder"
    assert ExportRequest(default_model.checkpoint(), tmp_path, "m").plan().family.name == "encoder"
    qwen3 = qwen3_reranker(tmp_path / "qwen3-reranker", layers=1, hidden=32)
    assert ExportRequest(qwen3, tmp_path, "q", task="embed").plan().family.name == "qwen3-embedder"
    plan = ExportRequest(qwen3, tmp_path, "q", task="rerank").plan()
    assert (plan.family.name, plan.dimension, plan.layout.max_length) == ("qwen3-reranker", 1, 8192)
    assert plan.score_tokens == (plan.tokenizer.token_to_id("yes"), plan.tokenizer.token_to_id("no"))
    assert parse_args([str(qwen3), "--task", "rerank"]).task == "rerank"


def test_a_reranker_by_name_or_card_is_not_embedded_silently(tmp_path: Path) -> None:
    """A Qwen3-Reranker is a plain `Qwen3ForCausalLM`: the export refuses it without `--task` when its folder
    name, the id it is served as or its model card's pipeline_tag says reranker; `--task` decides."""
    from export.errors import ExportError
    from tests.tiny.qwen3_reranker import qwen3_reranker

    named = qwen3_reranker(tmp_path / "Qwen3-Reranker-0.6B", layers=1, hidden=32)
    with pytest.raises(ExportError, match=r"looks like a reranker \(folder 'Qwen3-Reranker-0.6B'\).*--task rerank"):
        ExportRequest(named, tmp_path, "q").plan()
    assert ExportRequest(named, tmp_path, "q", task="rerank").plan().family.name == "qwen3-reranker"
    plain = qwen3_reranker(tmp_path / "plain", layers=1, hidden=32)
    assert ExportRequest(plain, tmp_path, "q").plan().family.name == "qwen3-embedder"
    with pytest.raises(ExportError, match="id 'Qwen/Qwen3-Reranker-4B'"):
        ExportRequest(plain, tmp_path, "q", hf_id="Qwen/Qwen3-Reranker-4B").plan()
    (plain / "README.md").write_text("---\nlicense: apache-2.0\npipeline_tag: text-ranking\n---\n# A model\n")
    with pytest.raises(ExportError, match="pipeline_tag text-ranking"):
        ExportRequest(plain, tmp_path, "q").plan()
    # An embedder's card may name its sibling reranker in its text: only the front matter counts.
    (plain / "README.md").write_text("---\npipeline_tag: feature-extraction\n---\nSee also Qwen3-Reranker.\n")
    assert ExportRequest(plain, tmp_path, "q").plan().family.name == "qwen3-embedder"

"""The config contract: every parameter block survives the trip export → config.pbtxt → reader, and the
families it is generated from are unambiguous."""

from __future__ import annotations

import subprocess
import sys

import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from runtime.contract import (
    ContractError,
    EncoderHostParams,
    EnsembleCard,
    FixedImageParams,
    ImageEnsembleCard,
    Parameters,
    PatchImageParams,
    TextParams,
    input_type_of,
    parameters,
)

SAMPLES: list[Parameters] = [
    EnsembleCard(1024, 32768, "Qwen/x", ("a", "b"), ("text", "image"), "m_image", True, 1, 151669, True, (256,), 32),
    ImageEnsembleCard("image", "m"),
    TextParams("tokenizer.json", (1,), (2,), 512, 0, (16, 512), "START", "Q: {instruction} {text}", "task", "D"),
    EncoderHostParams("length_packed", "model.onnx", 2, max_rows=8, max_tokens=4096, max_padding=0.5),
    EncoderHostParams("vision_packed", "", 0, "m_vision_engine", ("pixel_values:float32",), max_patches=4096),
    FixedImageParams(336, 336, 336, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.2613, 0.2757), 3, 50_000_000),
    PatchImageParams(200704, 1003520, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 14, 2, 2, 151655, 50_000_000),
]


@pytest.mark.parametrize("block", SAMPLES, ids=lambda b: type(b).__name__)
def test_every_block_round_trips_through_a_config(block: Parameters) -> None:
    config = mc.ModelConfig(name="m")
    for key, value in block.to_parameters().items():
        config.parameters[key].string_value = value
    printed = text_format.Parse(text_format.MessageToString(config), mc.ModelConfig())  # as Triton reads it
    as_json = json_format.MessageToDict(printed, preserving_proto_field_name=True)  # as initialize gets it
    assert type(block).from_parameters(parameters(as_json)) == block


def test_a_missing_or_malformed_parameter_is_an_error_not_a_guess() -> None:
    written = TextParams("t.json", (), (2,), 64, 0, (16, 64), "END").to_parameters()
    with pytest.raises(ContractError, match="lacks the parameter 'max_length'"):
        TextParams.from_parameters({k: v for k, v in written.items() if k != "max_length"})
    with pytest.raises(ContractError, match="default_truncate"):
        TextParams.from_parameters({**written, "default_truncate": "MIDDLE"})
    with pytest.raises(ContractError, match="fuses_modalities"):
        EnsembleCard.from_parameters({"dimension": "4", "max_tokens": "8", "fuses_modalities": "yes"})


def test_host_parameters_carry_only_their_batching_limits() -> None:
    assert "max_patches" not in EncoderHostParams("length_packed", "model.onnx").to_parameters()
    assert "max_rows" not in EncoderHostParams("vision_packed", "model.onnx", max_patches=8).to_parameters()


@pytest.mark.parametrize(
    ("input_type", "instruction", "resolved"),
    [(None, None, "document"), (None, "task", "query"), ("query", "task", "query"), ("document", None, "document")],
)
def test_an_instruction_implies_a_query(input_type, instruction, resolved) -> None:
    assert input_type_of(input_type, instruction) == resolved


def test_a_document_takes_no_instruction() -> None:
    with pytest.raises(ValueError, match="instruction applies to queries only"):
        input_type_of("document", "task")


def test_the_adapter_reads_the_contract_without_heavy_libraries() -> None:
    code = (
        "import sys, client.app; print(sorted(m for m in ('torch', 'transformers', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_each_model_type_has_one_family() -> None:
    from export.families import families

    types = [t for f in families() for t in f.model_types]
    assert len(types) == len(set(types)), types
    assert len({f.name for f in families()}) == len(families())

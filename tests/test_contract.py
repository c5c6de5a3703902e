"""The config contract: every parameter block survives the trip export → config.pbtxt → reader, and the
families it is generated from are unambiguous."""

from __future__ import annotations

import subprocess
import sys

import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from contract import (
    ContractError,
    EncoderHostParams,
    EnsembleCard,
    FixedImageParams,
    Parameters,
    PatchImageParams,
    TextParams,
    input_type_of,
    parameters,
)

SAMPLES: list[Parameters] = [
    EnsembleCard(1024, 32768, "Qwen/x", ("a", "b"), ("text", "image"), "m_image", True, 1, 151669, True, (256,), 32),
    EnsembleCard(768, 77, modalities=("text", "image"), image_ensemble="c_image", controls=("TRUNCATE",)),
    TextParams("tokenizer.json", (1,), (2,), 512, 0, (16, 512), "START", "Q: {instruction} {text}", "task", "D"),
    EncoderHostParams("length_packed", "model.onnx", 2, max_rows=8, max_tokens=4096, max_padding=0.5),
    EncoderHostParams("vision_packed", "", 0, "m_vision_engine", ("pixel_values:float32",), max_patches=4096),
    FixedImageParams(336, 336, 336, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.2613, 0.2757), 3, 50_000_000),
    PatchImageParams(200704, 1003520, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 14, 2, 2, 50_000_000),
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


def test_each_model_type_has_one_family_per_task_and_weight_files() -> None:
    """A `bert` checkpoint embeds or reranks (its architecture says which), an `xlm-roberta` one with
    BGE-M3's head files is BGE-M3's, and one saved as a SparseEncoder is SPLADE's: one family for each."""
    from export.families import families, family_for

    types = [(t, f.task, f.weight_files, f.markers) for f in families() for t in f.model_types]
    assert len(types) == len(set(types)), types
    assert len({f.name for f in families()}) == len(families())
    m3 = frozenset({"config.json", "sparse_linear.pt", "colbert_linear.pt"})
    assert family_for("xlm-roberta", "embed", m3).name == "bge-m3"
    assert family_for("xlm-roberta", "embed", m3 - {"colbert_linear.pt"}).name == "encoder"
    # A SparseEncoder's SpladePooling module marks SPLADE, whose own task is sparse; --task embed overrides it.
    assert family_for("bert", None, frozenset({"Transformer", "SpladePooling"})).name == "splade"
    assert family_for("bert", "embed", frozenset({"Transformer", "SpladePooling"})).name == "encoder"


WIRE_NAMES = {"TEXT", "IMAGE", "TOKEN_IDS", "TRUNCATE", "INPUT_TYPE", "INSTRUCTION", "EMBEDDING", "TOKEN_COUNT"}
WIRE_NAMES |= {"IMAGE_EMBEDS", "SPARSE_IDS", "SPARSE_WEIGHTS", "TOKEN_VECTORS"}


def second_spellings(source: str) -> list[tuple[int, str]]:
    """(line, what) of every wire name written as a literal, and every list of the truncate modes."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and node.value in WIRE_NAMES:
            found.append((node.lineno, node.value))
        elif isinstance(node, ast.Tuple | ast.List | ast.Set):
            values = {e.value for e in node.elts if isinstance(e, ast.Constant)}
            if {"NONE", "START", "END"} <= values:
                found.append((node.lineno, "the truncate modes"))
    return sorted(found)


def test_wire_names_are_spelled_only_in_the_contract() -> None:
    """The tensor names crossing client/, export/ and runtime/, and the truncate modes, come from
    contract/__init__.py: a literal elsewhere is a second spelling that can drift. (client/examples/
    shows tritonclient users the raw names on purpose.)"""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    found = [
        f"{path.relative_to(root)}:{line} {what}"
        for package in ("client", "export", "runtime", "launcher")
        for path in sorted((root / package).rglob("*.py"))
        if path.name != "contract.py" and "examples" not in path.parts
        for line, what in second_spellings(path.read_text())
    ]
    assert found == []


def test_second_spellings_are_found() -> None:
    source = 'a = {"TEXT": 1}\nb: Literal["NONE", "START", "END"]\nc = ("NONE", "START", "END")\nd = x == "NONE"\n'
    assert second_spellings(source) == [(1, "TEXT"), (2, "the truncate modes"), (3, "the truncate modes")]


@pytest.mark.parametrize("kind", ["minilm", "gme"])
def test_each_card_names_the_optional_inputs_of_its_ensembles(kind: str, gme_checkpoint) -> None:
    """The adapter sends an ensemble only the controls its card names: they are exactly the inputs
    the ensemble declares optional."""
    from pathlib import Path

    from export.build import triton_models
    from export.request import ExportRequest
    from launcher import default_model

    checkpoint = default_model.checkpoint() if kind == "minilm" else gme_checkpoint
    request = ExportRequest(checkpoint, Path("r"), "m")
    configs = {m.config.name: m.config for m in triton_models(request, request.plan())}
    as_json = json_format.MessageToDict(configs["m"], preserving_proto_field_name=True)
    card = EnsembleCard.from_parameters(parameters(as_json))

    def optional(name: str) -> tuple[str, ...]:
        return tuple(t.name for t in configs[name].input if t.optional)

    assert optional("m") == card.controls
    if card.image_ensemble:
        assert optional(card.image_ensemble) == card.image_controls == ("TEXT", "INPUT_TYPE", "INSTRUCTION")
    else:
        assert card.image_controls == ()


def test_the_exports_value_types_are_a_leaf() -> None:
    """`export.request` (the request, serving settings, profiles, graph settings) imports neither torch
    nor the pipeline that uses it; the towers' interface only needs it."""
    code = (
        "import sys, export.request, export.towers.base, export.configs; "
        "print(sorted(m for m in ('torch', 'transformers', 'export.build', 'export.graph') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

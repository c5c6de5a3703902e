"""Typed views of the `parameters` block of a generated `config.pbtxt`.

Triton hands `initialize` the model config as JSON; these functions turn its
string parameters into frozen dataclasses once, so `execute` never parses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.images import ClipImageSpec
from runtime.onnx_encoder import VISION_PATCHES_PER_CALL, Packing
from runtime.qwen2vl import VisionSpec
from runtime.text import TRUNCATE_MODES, Prompt, TextLayout


def parameters(model_config: dict[str, Any]) -> dict[str, str]:
    """`{key: string_value}` of a model config as Triton passes it to `initialize`."""
    return {k: v.get("string_value", "") for k, v in model_config.get("parameters", {}).items()}


def _ints(value: str) -> tuple[int, ...]:
    return tuple(int(x) for x in value.split(",") if x.strip())


def _floats(params: dict[str, str], key: str) -> tuple[float, ...]:
    return tuple(float(x) for x in _require(params, key).split(","))


def _require(params: dict[str, str], key: str) -> str:
    if key not in params:
        raise ValueError(f"config.pbtxt lacks the parameter {key!r}")
    return params[key]


@dataclass(frozen=True)
class PreprocessParams:
    """Everything the text preprocessor needs, read from its config."""

    tokenizer_path: Path
    layout: TextLayout
    default_truncate: str
    prompt: Prompt

    @classmethod
    def from_config(cls, model_config: dict[str, Any], version_dir: Path) -> PreprocessParams:
        p = parameters(model_config)
        truncate = _require(p, "default_truncate")
        if truncate not in TRUNCATE_MODES:
            raise ValueError(f"default_truncate must be one of {TRUNCATE_MODES}, got {truncate!r}")
        layout = TextLayout(
            prefix_ids=_ints(p.get("prefix_ids", "")),
            suffix_ids=_ints(p.get("suffix_ids", "")),
            max_length=int(_require(p, "max_length")),
            pad_id=int(_require(p, "pad_id")),
            buckets=_ints(_require(p, "buckets")),
        )
        prompt = Prompt(p.get("query_template", ""), p.get("default_instruction", ""), p.get("document_template", ""))
        return cls(version_dir / _require(p, "tokenizer"), layout, truncate, prompt)


@dataclass(frozen=True)
class EncoderParams:
    """The ONNX file and threading of the CPU encoder hosted in the Python backend."""

    onnx_path: Path
    intra_op_threads: int
    output_name: str
    packing: Packing | None  # None: fixed-shape inputs, requests are concatenated as they are
    batching: str = "length_packed"
    engine_model: str = ""  # "": run the ONNX file in-process; else call this Triton model through BLS
    engine_inputs: dict[str, str] = field(default_factory=dict)  # the engine's input name → numpy dtype
    image_hidden: int | None = None  # GME's LM: the width of the image features it takes
    max_patches: int = VISION_PATCHES_PER_CALL["cpu"]  # GME's vision tower: patches packed into one call

    @classmethod
    def from_config(cls, model_config: dict[str, Any], version_dir: Path) -> EncoderParams:
        p = parameters(model_config)
        output = model_config["output"][0]["name"]
        packing = None
        if p.get("batching", "length_packed") in ("length_packed", "vision_packed"):
            packing = Packing(
                int(p.get("max_rows", Packing.max_rows)),
                int(p.get("max_tokens", Packing.max_tokens)),
                float(p.get("max_padding", Packing.max_padding)),
            )
        threads = int(p.get("intra_op_threads", "0"))
        image = [i for i in model_config["input"] if i["name"] == "IMAGE_EMBEDS"]
        engine_inputs = dict(pair.split(":") for pair in p.get("engine_inputs", "").split(",") if pair)
        return cls(
            version_dir / p.get("onnx_file", "model.onnx"),
            threads,
            output,
            packing,
            p.get("batching", "length_packed"),
            p.get("engine_model", ""),
            engine_inputs,
            int(image[0]["dims"][-1]) if image else None,
            int(p.get("max_patches", VISION_PATCHES_PER_CALL["cpu"])),
        )


@dataclass(frozen=True)
class ImageParams:
    """The image preprocessor's resize / crop / normalisation and its decoding cap."""

    spec: ClipImageSpec
    max_pixels: int

    @classmethod
    def from_config(cls, model_config: dict[str, Any], version_dir: Path) -> ImageParams:
        p = parameters(model_config)
        spec = ClipImageSpec(
            shortest_edge=int(_require(p, "shortest_edge")),
            crop_height=int(_require(p, "crop_height")),
            crop_width=int(_require(p, "crop_width")),
            mean=_floats(p, "image_mean"),  # type: ignore[arg-type]
            std=_floats(p, "image_std"),  # type: ignore[arg-type]
            resample=int(p.get("resample", "3")),
        )
        return cls(spec, int(_require(p, "max_pixels")))


@dataclass(frozen=True)
class GmeImageParams:
    """GME's image-item preprocessing: the text part of PreprocessParams plus the vision settings."""

    text: PreprocessParams
    vision: VisionSpec
    max_decoded_pixels: int

    @classmethod
    def from_config(cls, model_config: dict[str, Any], version_dir: Path) -> GmeImageParams:
        p = parameters(model_config)
        vision = VisionSpec(
            min_pixels=int(_require(p, "min_pixels")),
            max_pixels=int(_require(p, "max_pixels")),
            mean=_floats(p, "image_mean"),  # type: ignore[arg-type]
            std=_floats(p, "image_std"),  # type: ignore[arg-type]
            patch_size=int(_require(p, "patch_size")),
            merge_size=int(_require(p, "merge_size")),
            temporal_patch_size=int(_require(p, "temporal_patch_size")),
        )
        text = PreprocessParams.from_config(model_config, version_dir)
        return cls(text, vision, int(_require(p, "max_decoded_pixels")))


def version_dir(args: dict[str, str]) -> Path:
    """The `<repo>/<model>/<version>` folder of the instance being initialised."""
    return Path(args["model_repository"]) / args["model_version"]


def model_config(args: dict[str, str]) -> dict[str, Any]:
    return json.loads(args["model_config"])

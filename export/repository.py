"""Write a model's entries into a Triton model repository.

Every `config.pbtxt` is built as Triton's own `ModelConfig` protobuf message and
printed with `text_format`, so what we write is what Triton parses. The Python
models are the shells of `runtime/` plus a copy of that package.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from runtime.images import ClipImageSpec
from runtime.qwen2vl import VisionSpec
from runtime.text import Prompt, TextLayout

Target = Literal["local", "onnxruntime", "tensorrt"]
TARGETS: tuple[str, ...] = ("local", "onnxruntime", "tensorrt")
RUNTIME_DIR = Path(__file__).resolve().parent.parent / "runtime"


@dataclass(frozen=True)
class Serving:
    """Batching and instance settings of the generated models."""

    max_batch_size: int = 64  # rows per request into the ensemble and the preprocessor
    max_image_pixels: int = 50_000_000  # decoded-pixel cap per image (decompression bombs)
    encoder_max_batch_size: int = 512  # rows per encoder execute (several requests, regrouped by length)
    # Encoders wait up to 1 ms for more requests. Measured on the CPU, 0 vs 1000 µs over five A/B
    # rounds: 32/request throughput 0.91× vs 0.97× in-process (1 ms ahead in all five), single
    # query about 1 ms faster at 0. 250 vs 1000 µs over three rounds: 1 ms ahead at 32 and at 1 text per
    # request in all three, single query no different. Preprocessors are cheap per request and never wait.
    queue_delay_us: int = 1000
    preprocess_queue_delay_us: int = 0
    preprocess_instances: int = 1
    encoder_instances: int = 1
    intra_op_threads: int = 0
    default_truncate: str = "END"


@dataclass(frozen=True)
class ModelCard:
    """What the adapter learns about an ensemble from its parameters."""

    name: str
    dimension: int
    max_tokens: int
    hf_id: str = ""
    aliases: tuple[str, ...] = ()
    modalities: tuple[str, ...] = ("text",)
    image_ensemble: str = ""  # the ensemble embedding images, for models with an image tower
    fuses_modalities: bool = False
    vocab_size: int = 0  # the tokenizer's, added tokens included: the bound of token-id input
    query_template: bool = False  # queries get an instruction template (input_type, instruction matter)
    extra: dict[str, str] = field(default_factory=dict)

    def parameters(self) -> dict[str, str]:
        return {
            "embedding_model": "true",
            "hf_id": self.hf_id,
            "aliases": ",".join(self.aliases),
            "dimension": str(self.dimension),
            "max_tokens": str(self.max_tokens),
            "modalities": ",".join(self.modalities),
            "image_ensemble": self.image_ensemble,
            "fuses_modalities": str(self.fuses_modalities).lower(),
            "vocab_size": str(self.vocab_size),
            "query_template": str(self.query_template).lower(),
            **self.extra,
        }


def _tensor(cls, name: str, dtype: int, dims: list[int], optional: bool = False):
    t = cls(name=name, data_type=dtype, dims=dims)
    if optional:
        t.optional = True
    return t


def _params(config: mc.ModelConfig, values: dict[str, str]) -> None:
    for key, value in values.items():
        config.parameters[key].string_value = value


def _batching(config: mc.ModelConfig, serving: Serving, engine: bool, kind: int, max_batch: int | None = None) -> None:
    """Dynamic batching and instances of an encoder engine, or of a preprocessor (`engine=False`)."""
    config.max_batch_size = max_batch or serving.max_batch_size
    config.dynamic_batching.max_queue_delay_microseconds = (
        serving.queue_delay_us if engine else serving.preprocess_queue_delay_us
    )
    config.instance_group.add(count=serving.encoder_instances if engine else serving.preprocess_instances, kind=kind)


def _text_inputs(cls) -> list:
    """TEXT plus the optional per-request controls, shared by the ensemble and its preprocessor."""
    return [
        _tensor(cls, "TEXT", mc.TYPE_STRING, [1]),
        _tensor(cls, "TRUNCATE", mc.TYPE_STRING, [1], optional=True),
        _tensor(cls, "INPUT_TYPE", mc.TYPE_STRING, [1], optional=True),
        _tensor(cls, "INSTRUCTION", mc.TYPE_STRING, [1], optional=True),
        _tensor(cls, "TOKEN_IDS", mc.TYPE_STRING, [1], optional=True),  # pre-tokenised rows, int64 little-endian
    ]


def preprocess_config(name: str, layout: TextLayout, serving: Serving, prompt: Prompt | None = None) -> mc.ModelConfig:
    prompt = prompt or Prompt()
    c = mc.ModelConfig(name=f"{name}_preprocess", backend="python")
    _batching(c, serving, False, mc.ModelInstanceGroup.KIND_CPU)
    c.input.extend(_text_inputs(mc.ModelInput))
    c.output.extend(
        [
            _tensor(mc.ModelOutput, "input_ids", mc.TYPE_INT64, [-1]),
            _tensor(mc.ModelOutput, "attention_mask", mc.TYPE_INT64, [-1]),
            _tensor(mc.ModelOutput, "TOKEN_COUNT", mc.TYPE_INT32, [1]),
        ]
    )
    _params(c, _text_params(layout, serving, prompt))
    return c


def _text_params(layout: TextLayout, serving: Serving, prompt: Prompt) -> dict[str, str]:
    """Tokenisation parameters shared by every preprocessor that tokenises (text, and GME's image items)."""
    return {
        "tokenizer": "tokenizer.json",
        "prefix_ids": ",".join(map(str, layout.prefix_ids)),
        "suffix_ids": ",".join(map(str, layout.suffix_ids)),
        "max_length": str(layout.max_length),
        "pad_id": str(layout.pad_id),
        "buckets": ",".join(map(str, layout.buckets)),
        "default_truncate": serving.default_truncate,
        "query_template": prompt.query_template,
        "default_instruction": prompt.default_instruction,
        "document_template": prompt.document_template,
    }


def gme_image_preprocess_config(
    name: str, layout: TextLayout, serving: Serving, prompt: Prompt, vision: VisionSpec, image_token_id: int
) -> mc.ModelConfig:
    """One image item (and its optional text) → prompt ids with expanded image pads, patches, positions."""
    c = mc.ModelConfig(name=f"{name}_image_preprocess", backend="python")
    _batching(c, serving, False, mc.ModelInstanceGroup.KIND_CPU)
    c.input.extend(
        [
            _tensor(mc.ModelInput, "IMAGE", mc.TYPE_STRING, [1]),
            _tensor(mc.ModelInput, "TEXT", mc.TYPE_STRING, [1], optional=True),
            _tensor(mc.ModelInput, "INPUT_TYPE", mc.TYPE_STRING, [1], optional=True),
            _tensor(mc.ModelInput, "INSTRUCTION", mc.TYPE_STRING, [1], optional=True),
        ]
    )
    c.output.extend(
        [
            _tensor(mc.ModelOutput, "input_ids", mc.TYPE_INT64, [-1]),
            _tensor(mc.ModelOutput, "attention_mask", mc.TYPE_INT64, [-1]),
            _tensor(mc.ModelOutput, "TOKEN_COUNT", mc.TYPE_INT32, [1]),
            _tensor(mc.ModelOutput, "pixel_values", mc.TYPE_FP32, [-1, 1176]),
            _tensor(mc.ModelOutput, "position_ids", mc.TYPE_INT64, [-1, 2]),
            _tensor(mc.ModelOutput, "segment_ids", mc.TYPE_INT64, [-1]),
        ]
    )
    _params(
        c,
        {
            **_text_params(layout, serving, prompt),
            "min_pixels": str(vision.min_pixels),
            "max_pixels": str(vision.max_pixels),
            "image_mean": ",".join(map(str, vision.mean)),
            "image_std": ",".join(map(str, vision.std)),
            "patch_size": str(vision.patch_size),
            "merge_size": str(vision.merge_size),
            "temporal_patch_size": str(vision.temporal_patch_size),
            "image_token_id": str(image_token_id),
            "max_decoded_pixels": str(serving.max_image_pixels),
        },
    )
    return c


def gme_vision_config(
    name: str, hidden: int, target: Target, serving: Serving, gpu: bool, max_patches: int
) -> mc.ModelConfig:
    """GME's vision host: packs the patches of many images, at most `max_patches` a call (one larger image alone)."""
    inputs = [
        _tensor(mc.ModelInput, "pixel_values", mc.TYPE_FP32, [-1, 1176]),
        _tensor(mc.ModelInput, "position_ids", mc.TYPE_INT64, [-1, 2]),
        _tensor(mc.ModelInput, "segment_ids", mc.TYPE_INT64, [-1]),
    ]
    c = _engine_config(f"{name}_vision", inputs, hidden, target, serving, gpu, "vision_packed")
    _params(c, {"max_patches": str(max_patches)})
    del c.output[:]
    c.output.extend([_tensor(mc.ModelOutput, "IMAGE_EMBEDS", mc.TYPE_FP32, [-1, hidden])])
    return c


def gme_image_ensemble_config(name: str, dimension: int, serving: Serving) -> mc.ModelConfig:
    """`IMAGE` (+ optional `TEXT`: fused) → preprocess → vision tower → the LM shared with text → `EMBEDDING`."""
    c = mc.ModelConfig(name=f"{name}_image", platform="ensemble", max_batch_size=serving.max_batch_size)
    controls = ("TEXT", "INPUT_TYPE", "INSTRUCTION")
    c.input.extend([_tensor(mc.ModelInput, "IMAGE", mc.TYPE_STRING, [1])])
    c.input.extend([_tensor(mc.ModelInput, n, mc.TYPE_STRING, [1], optional=True) for n in controls])
    c.output.extend(
        [
            _tensor(mc.ModelOutput, "EMBEDDING", mc.TYPE_FP32, [dimension]),
            _tensor(mc.ModelOutput, "TOKEN_COUNT", mc.TYPE_INT32, [1]),
        ]
    )
    pre = c.ensemble_scheduling.step.add(model_name=f"{name}_image_preprocess", model_version=-1)
    pre.input_map.update({n: n for n in ("IMAGE", *controls)})
    produced = ("input_ids", "attention_mask", "TOKEN_COUNT", "pixel_values", "position_ids", "segment_ids")
    pre.output_map.update({n: n for n in produced})
    vis = c.ensemble_scheduling.step.add(model_name=f"{name}_vision", model_version=-1)
    vis.input_map.update({n: n for n in ("pixel_values", "position_ids", "segment_ids")})
    vis.output_map.update({"IMAGE_EMBEDS": "IMAGE_EMBEDS"})
    enc = c.ensemble_scheduling.step.add(model_name=f"{name}_encoder", model_version=-1)
    enc.input_map.update({"input_ids": "input_ids", "attention_mask": "attention_mask", "IMAGE_EMBEDS": "IMAGE_EMBEDS"})
    enc.output_map.update({"EMBEDDING": "EMBEDDING"})
    _params(c, {"embedding_role": "image", "text_model": name})
    return c


def _native_engine(c: mc.ModelConfig, target: Target) -> None:
    """Triton's own backend for an exported engine: ONNX Runtime on `model.onnx`, or a TensorRT `model.plan`."""
    if target == "onnxruntime":
        c.backend = "onnxruntime"
        c.default_model_filename = "model.onnx"
    else:
        c.platform = "tensorrt_plan"
        c.default_model_filename = "model.plan"


def _engine_config(
    model: str, inputs: list, dimension: int, target: Target, serving: Serving, gpu: bool, batching: str
) -> mc.ModelConfig:
    """An encoder engine for one of the three targets; `batching` tells the local host how to merge requests."""
    c = mc.ModelConfig(name=model)
    # TensorRT runs on GPUs only: its backend refuses KIND_CPU instances ("supports only GPU device").
    kind = mc.ModelInstanceGroup.KIND_GPU if gpu or target == "tensorrt" else mc.ModelInstanceGroup.KIND_CPU
    if target == "local":
        c.backend = "python"
        kind = mc.ModelInstanceGroup.KIND_CPU
        _params(c, {"onnx_file": "model.onnx", "intra_op_threads": str(serving.intra_op_threads), "batching": batching})
    else:
        _native_engine(c, target)
    # The local host regroups rows of many requests (ragged); engines take what one batch of requests holds,
    # which for TensorRT must stay within the plan's profile (built with max batch = serving.max_batch_size).
    ragged = target == "local" and batching in ("length_packed", "vision_packed")
    wide = ragged and batching == "length_packed"  # text rows are cheap to regroup; images stay at the batch size
    rows = max(serving.encoder_max_batch_size, serving.max_batch_size) if wide else serving.max_batch_size
    _batching(c, serving, True, kind, rows)
    c.input.extend(inputs)
    if ragged:
        for tensor in c.input:
            tensor.allow_ragged_batch = True
    c.output.extend([_tensor(mc.ModelOutput, "EMBEDDING", mc.TYPE_FP32, [dimension])])
    return c


@dataclass(frozen=True)
class GraphTensor:
    """One input or output of an exported graph, as a Triton config states it."""

    name: str
    data_type: int  # mc.TYPE_*
    dims: tuple[int, ...]  # -1 for dynamic axes


ONNX_TO_TRITON = {1: mc.TYPE_FP32, 7: mc.TYPE_INT64, 10: mc.TYPE_FP16, 16: mc.TYPE_BF16}
TRITON_TO_NUMPY = {mc.TYPE_FP32: "float32", mc.TYPE_INT64: "int64", mc.TYPE_FP16: "float16"}


def graph_io(onnx_path: Path) -> tuple[list[GraphTensor], list[GraphTensor]]:
    """The graph's inputs and outputs, read without loading external weights."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph

    def tensors(values) -> list[GraphTensor]:
        return [
            GraphTensor(
                v.name,
                ONNX_TO_TRITON[v.type.tensor_type.elem_type],
                tuple(d.dim_value if d.dim_value > 0 else -1 for d in v.type.tensor_type.shape.dim),
            )
            for v in values
        ]

    return tensors(graph.input), tensors(graph.output)


def gme_engine_config(
    model: str, io: tuple[list[GraphTensor], list[GraphTensor]], target: Target, gpu: bool
) -> mc.ModelConfig:
    """A GME engine on a native backend, called by its Python host through BLS with one packed batch.

    `max_batch_size: 0`: the host has already packed many requests (rows with image features of
    different sizes, images of different patch counts) into the graph's own dynamic axes, which
    Triton's batcher cannot do for ragged per-request features.
    """
    c = mc.ModelConfig(name=model, max_batch_size=0)
    _native_engine(c, target)
    kind = mc.ModelInstanceGroup.KIND_GPU if gpu or target == "tensorrt" else mc.ModelInstanceGroup.KIND_CPU
    c.instance_group.add(count=1, kind=kind)
    inputs, outputs = io
    c.input.extend(_tensor(mc.ModelInput, t.name, t.data_type, list(t.dims)) for t in inputs)
    c.output.extend(_tensor(mc.ModelOutput, t.name, t.data_type, list(t.dims)) for t in outputs)
    return c


def gme_host(host: mc.ModelConfig, engine: mc.ModelConfig) -> mc.ModelConfig:
    """GME's ragged-batch host (a `local` encoder config) turned into the BLS caller of `engine`."""
    del host.parameters["onnx_file"]
    types = ",".join(f"{t.name}:{TRITON_TO_NUMPY.get(t.data_type, 'float32')}" for t in engine.input)
    _params(host, {"engine_model": engine.name, "engine_inputs": types})
    return host


def encoder_config(
    name: str, dimension: int, target: Target, serving: Serving, gpu: bool, image_embeds: int | None = None
) -> mc.ModelConfig:
    """The text encoder; with `image_embeds` (GME) it also takes image features to scatter over the image pads."""
    inputs = [
        _tensor(mc.ModelInput, "input_ids", mc.TYPE_INT64, [-1]),
        _tensor(mc.ModelInput, "attention_mask", mc.TYPE_INT64, [-1]),
    ]
    if image_embeds is not None:
        inputs.append(_tensor(mc.ModelInput, "IMAGE_EMBEDS", mc.TYPE_FP32, [-1, image_embeds], optional=True))
    return _engine_config(f"{name}_encoder", inputs, dimension, target, serving, gpu, "length_packed")


def vision_config(
    name: str, dimension: int, image: ClipImageSpec, target: Target, serving: Serving, gpu: bool
) -> mc.ModelConfig:
    inputs = [_tensor(mc.ModelInput, "pixel_values", mc.TYPE_FP32, [3, image.crop_height, image.crop_width])]
    return _engine_config(f"{name}_vision", inputs, dimension, target, serving, gpu, "concatenate")


def image_preprocess_config(name: str, image: ClipImageSpec, serving: Serving) -> mc.ModelConfig:
    c = mc.ModelConfig(name=f"{name}_image_preprocess", backend="python")
    _batching(c, serving, False, mc.ModelInstanceGroup.KIND_CPU)
    c.input.extend([_tensor(mc.ModelInput, "IMAGE", mc.TYPE_STRING, [1])])
    c.output.extend(
        [
            _tensor(mc.ModelOutput, "pixel_values", mc.TYPE_FP32, [3, image.crop_height, image.crop_width]),
            _tensor(mc.ModelOutput, "TOKEN_COUNT", mc.TYPE_INT32, [1]),
        ]
    )
    _params(
        c,
        {
            "shortest_edge": str(image.shortest_edge),
            "crop_height": str(image.crop_height),
            "crop_width": str(image.crop_width),
            "image_mean": ",".join(map(str, image.mean)),
            "image_std": ",".join(map(str, image.std)),
            "resample": str(image.resample),
            "max_pixels": str(serving.max_image_pixels),
        },
    )
    return c


def image_ensemble_config(name: str, dimension: int, serving: Serving) -> mc.ModelConfig:
    """`IMAGE` (encoded bytes) → `<name>_image_preprocess` → `<name>_vision` → `EMBEDDING`."""
    c = mc.ModelConfig(name=f"{name}_image", platform="ensemble", max_batch_size=serving.max_batch_size)
    c.input.extend([_tensor(mc.ModelInput, "IMAGE", mc.TYPE_STRING, [1])])
    c.output.extend(
        [
            _tensor(mc.ModelOutput, "EMBEDDING", mc.TYPE_FP32, [dimension]),
            _tensor(mc.ModelOutput, "TOKEN_COUNT", mc.TYPE_INT32, [1]),
        ]
    )
    pre = c.ensemble_scheduling.step.add(model_name=f"{name}_image_preprocess", model_version=-1)
    pre.input_map.update({"IMAGE": "IMAGE"})
    pre.output_map.update({"pixel_values": "pixel_values", "TOKEN_COUNT": "TOKEN_COUNT"})
    vis = c.ensemble_scheduling.step.add(model_name=f"{name}_vision", model_version=-1)
    vis.input_map.update({"pixel_values": "pixel_values"})
    vis.output_map.update({"EMBEDDING": "EMBEDDING"})
    _params(c, {"embedding_role": "image", "text_model": name})
    return c


def ensemble_config(card: ModelCard, serving: Serving) -> mc.ModelConfig:
    c = mc.ModelConfig(name=card.name, platform="ensemble", max_batch_size=serving.max_batch_size)
    c.input.extend(_text_inputs(mc.ModelInput))
    c.output.extend(
        [
            _tensor(mc.ModelOutput, "EMBEDDING", mc.TYPE_FP32, [card.dimension]),
            _tensor(mc.ModelOutput, "TOKEN_COUNT", mc.TYPE_INT32, [1]),
        ]
    )
    pre = c.ensemble_scheduling.step.add(model_name=f"{card.name}_preprocess", model_version=-1)
    pre.input_map.update({t.name: t.name for t in c.input})
    pre.output_map.update({"input_ids": "input_ids", "attention_mask": "attention_mask", "TOKEN_COUNT": "TOKEN_COUNT"})
    enc = c.ensemble_scheduling.step.add(model_name=f"{card.name}_encoder", model_version=-1)
    enc.input_map.update({"input_ids": "input_ids", "attention_mask": "attention_mask"})
    enc.output_map.update({"EMBEDDING": "EMBEDDING"})
    _params(c, card.parameters())
    return c


def write_config(model_dir: Path, config: mc.ModelConfig) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "1").mkdir(exist_ok=True)
    path = model_dir / "config.pbtxt"
    path.write_text(text_format.MessageToString(config))
    return path


def install_python_model(version_dir: Path, shell_module: str) -> None:
    """Copy `runtime/` beside a `model.py` that re-exports one of its shells."""
    target = version_dir / "runtime"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(RUNTIME_DIR, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (version_dir / "model.py").write_text(
        f'"""Generated by export: the shell lives in runtime/{shell_module}.py."""\n\n'
        f"from runtime.{shell_module} import TritonPythonModel  # noqa: F401\n"
    )


def parse_config(path: Path) -> mc.ModelConfig:
    """Parse a `config.pbtxt` as Triton does (unknown fields are errors)."""
    return text_format.Parse(path.read_text(), mc.ModelConfig())

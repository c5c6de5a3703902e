"""Build `config.pbtxt` messages from their parts: tensors, batching, engines, ensembles.

Every config is Triton's own `ModelConfig` protobuf message, printed with `text_format` by
`export/repository.py`, so what we write is what Triton parses. The towers (`export/towers/`)
say which models a family needs; these functions only assemble them, and nothing patches a
config after it is built.
"""

from __future__ import annotations

from dataclasses import dataclass

from tritonclient.grpc import model_config_pb2 as mc

from contract import DEFAULT_PRIORITY_LEVEL, EMBEDDING, PRIORITY_LEVELS, TOKEN_COUNT, Parameters
from export.request import Serving, Target


@dataclass(frozen=True)
class Tensor:
    """One input or output, as a config states it (dims without the batch axis when the model batches)."""

    name: str
    data_type: int  # mc.TYPE_*
    dims: tuple[int, ...]  # -1 for dynamic axes
    optional: bool = False


TRITON_TO_NUMPY = {mc.TYPE_FP32: "float32", mc.TYPE_FP16: "float16", mc.TYPE_BF16: "bfloat16", mc.TYPE_INT64: "int64"}


def numpy_dtype(data_type: int) -> str:
    """The numpy dtype a Python model feeds for a Triton type; an unmapped type is an error, not fp32."""
    if data_type not in TRITON_TO_NUMPY:
        raise ValueError(f"no numpy dtype for Triton type {mc.DataType.Name(data_type)}")
    return TRITON_TO_NUMPY[data_type]


def _add(field, tensors: list[Tensor], ragged: bool = False) -> None:
    for t in tensors:
        entry = field.add(name=t.name, data_type=t.data_type, dims=list(t.dims))
        if t.optional:
            entry.optional = True
        if ragged:
            entry.allow_ragged_batch = True


def _params(config: mc.ModelConfig, *blocks: Parameters | dict[str, str]) -> None:
    for block in blocks:
        values = block if isinstance(block, dict) else block.to_parameters()
        for key, value in values.items():
            config.parameters[key].string_value = value


def _bounded_queue(c: mc.ModelConfig, serving: Serving, delay_us: int) -> None:
    """Dynamic batching with a bounded queue: full → rejected at once; queued past its deadline → rejected."""
    c.dynamic_batching.max_queue_delay_microseconds = delay_us
    c.dynamic_batching.priority_levels = PRIORITY_LEVELS  # requests' `priority` (contract: triton_priority)
    c.dynamic_batching.default_priority_level = DEFAULT_PRIORITY_LEVEL
    policy = c.dynamic_batching.default_queue_policy
    policy.max_queue_size = serving.max_queue_size
    policy.timeout_action = mc.ModelQueuePolicy.REJECT
    policy.default_timeout_microseconds = serving.queue_timeout_us
    policy.allow_timeout_override = True


def _instances(config: mc.ModelConfig, count: int, gpu: bool) -> None:
    config.instance_group.add(
        count=count, kind=mc.ModelInstanceGroup.KIND_GPU if gpu else mc.ModelInstanceGroup.KIND_CPU
    )


def python_model(
    name: str,
    inputs: list[Tensor],
    outputs: list[Tensor],
    params: list[Parameters],
    serving: Serving,
    *,
    engine: bool = False,
    max_batch: int | None = None,
    ragged: bool = False,
    gpu: bool = False,
) -> mc.ModelConfig:
    """A Python-backend model: a preprocessor, or an engine host (`engine=True`: the encoders' batching
    delay and instance count), on the CPU unless `gpu` (the torch target's host: KIND_GPU, one
    instance per GPU Triton sees, each told its device in `initialize`)."""
    c = mc.ModelConfig(name=name, backend="python", max_batch_size=max_batch or serving.max_batch_size)
    _bounded_queue(c, serving, serving.queue_delay_us if engine else serving.preprocess_queue_delay_us)
    _instances(c, serving.encoder_instances if engine else serving.preprocess_instances, gpu=gpu)
    _add(c.input, inputs, ragged)
    _add(c.output, outputs)
    _params(c, *params)
    return c


def _native_backend(c: mc.ModelConfig, target: Target) -> None:
    """Triton's own backend for an exported engine: ONNX Runtime on `model.onnx`, or a TensorRT `model.plan`."""
    if target == "onnxruntime":
        c.backend = "onnxruntime"
        c.default_model_filename = "model.onnx"
    else:
        c.platform = "tensorrt_plan"
        c.default_model_filename = "model.plan"


def on_gpu(target: Target, gpu: bool) -> bool:
    """TensorRT runs on GPUs only: its backend refuses KIND_CPU instances ("supports only GPU device")."""
    return target == "tensorrt" or (target in ("onnxruntime", "torch") and gpu)


def native_engine(
    name: str, inputs: list[Tensor], outputs: list[Tensor], target: Target, serving: Serving, gpu: bool
) -> mc.ModelConfig:
    """An engine Triton batches itself: requests of equal shapes meet in its dynamic batcher."""
    c = mc.ModelConfig(name=name, max_batch_size=serving.max_batch_size)
    _native_backend(c, target)
    _bounded_queue(c, serving, serving.queue_delay_us)
    _instances(c, serving.encoder_instances, on_gpu(target, gpu))
    _add(c.input, inputs)
    _add(c.output, outputs)
    return c


def unbatched_engine(
    name: str, inputs: list[Tensor], outputs: list[Tensor], target: Target, gpu: bool
) -> mc.ModelConfig:
    """An engine behind a Python host that packs ragged batches itself (`max_batch_size: 0`): the host
    puts many requests into the graph's own dynamic axes, which Triton's batcher cannot do for rows
    with image features of different sizes, or images of different patch counts."""
    c = mc.ModelConfig(name=name, max_batch_size=0)
    _native_backend(c, target)
    _instances(c, 1, on_gpu(target, gpu))
    _add(c.input, inputs)
    _add(c.output, outputs)
    return c


@dataclass(frozen=True)
class Step:
    """One model of an ensemble, its tensors mapped by name (the same name on both sides)."""

    model: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def ensemble(
    name: str,
    inputs: list[Tensor],
    outputs: list[Tensor],
    steps: list[Step],
    serving: Serving,
    params: Parameters | None = None,
) -> mc.ModelConfig:
    """An ensemble of `steps`; `params`: the card the adapter reads (only on the ensembles it lists)."""
    c = mc.ModelConfig(name=name, platform="ensemble", max_batch_size=serving.max_batch_size)
    _add(c.input, inputs)
    _add(c.output, outputs)
    for step in steps:
        s = c.ensemble_scheduling.step.add(model_name=step.model, model_version=-1)
        s.input_map.update({n: n for n in step.inputs})
        s.output_map.update({n: n for n in step.outputs})
    if params is not None:
        _params(c, params)
    return c


def string(name: str, optional: bool = False) -> Tensor:
    return Tensor(name, mc.TYPE_STRING, (1,), optional)


def embedding_outputs(dimension: int) -> list[Tensor]:
    """What every ensemble returns: one vector and its token count per row."""
    return [Tensor(EMBEDDING, mc.TYPE_FP32, (dimension,)), token_count()]


def token_count() -> Tensor:
    return Tensor(TOKEN_COUNT, mc.TYPE_INT32, (1,))

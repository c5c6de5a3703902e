"""The rules of the Triton backend that will load each generated config, checked before it is written.

Read from Triton r25.10's backends: tensorrt_backend refuses CPU instances ("TensorRT backend supports
only GPU device", src/instance_state.cc) and a config max_batch_size above the plan's profile
(src/model_state.cc); each native backend maps only some tensor types. The bundled CPU tritonserver
has only the Python backend, so these rules are what stands between an export and a model that fails
to load on the GPU host. Python-backend models (preprocessors, and the `local` and `torch` hosts): the
backend places an instance on the CPU or on a GPU it is told (`model_instance_kind`, `_device_id`), so
only those kinds; Triton gathers ragged inputs only into a batching model; and a `torch` host's
parameters must read back as the contract says, or its `initialize` fails on the GPU host.
"""

from __future__ import annotations

from tritonclient.grpc import model_config_pb2 as mc

_NUMERIC = {mc.TYPE_FP32, mc.TYPE_FP16, mc.TYPE_BF16, mc.TYPE_INT64, mc.TYPE_INT32, mc.TYPE_INT8, mc.TYPE_UINT8}
TYPES = {
    "tensorrt": _NUMERIC | {mc.TYPE_BOOL},
    "onnxruntime": _NUMERIC | {mc.TYPE_BOOL, mc.TYPE_FP64, mc.TYPE_INT16, mc.TYPE_STRING},
}


def backend_of(config: mc.ModelConfig) -> str:
    if config.platform == "tensorrt_plan":
        return "tensorrt"
    return config.platform or config.backend


def violations(config: mc.ModelConfig, profile_max_batch: int | None = None) -> list[str]:
    """What the config's backend would refuse, one sentence each; empty when it would load."""
    backend = backend_of(config)
    found = []
    if backend == "tensorrt":
        for group in config.instance_group:
            if group.kind not in (mc.ModelInstanceGroup.KIND_GPU, mc.ModelInstanceGroup.KIND_AUTO):
                found.append(f"{config.name}: TensorRT models need GPU instances, not {group.kind}")
        if profile_max_batch is not None and config.max_batch_size > profile_max_batch:
            found.append(
                f"{config.name}: max_batch_size {config.max_batch_size} exceeds the engine's profile "
                f"max batch {profile_max_batch}"
            )
        found += [
            f"{config.name}: TensorRT cannot take ragged input {t.name}" for t in config.input if t.allow_ragged_batch
        ]
    if backend == "python":
        found += _python_violations(config)
    allowed = TYPES.get(backend)
    if allowed is not None:
        for tensor in [*config.input, *config.output]:
            if tensor.data_type not in allowed:
                found.append(
                    f"{config.name}: {backend} has no mapping for {tensor.name}'s {mc.DataType.Name(tensor.data_type)}"
                )
    return found


def _python_violations(config: mc.ModelConfig) -> list[str]:
    from contract import ContractError, TorchGraphParams

    placements = (mc.ModelInstanceGroup.KIND_CPU, mc.ModelInstanceGroup.KIND_GPU)
    kinds = [mc.ModelInstanceGroup.Kind.Name(g.kind) for g in config.instance_group if g.kind not in placements]
    found = [f"{config.name}: the Python backend runs instances on the CPU or a GPU, not {kind}" for kind in kinds]
    if config.max_batch_size == 0:
        found += [
            f"{config.name}: ragged input {t.name} needs a batching model" for t in config.input if t.allow_ragged_batch
        ]
    params = {key: value.string_value for key, value in config.parameters.items()}
    if "graph" in params:  # a `torch` host: its parameters, and a builder the graphs package has
        from graphs import builder_at

        try:
            builder_at(TorchGraphParams.from_parameters(params).graph)
        except (ContractError, ValueError, ImportError, AttributeError) as exc:
            found.append(f"{config.name}: {exc}")
    return found

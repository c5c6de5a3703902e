"""The engine model(s) of a tower on each target: a Python host with ONNX Runtime or OpenVINO in-process
(`local`, `openvino`) or the family's PyTorch graph in-process (`torch`), Triton's own backend
(`onnxruntime`, `tensorrt`), or a Python host packing ragged batches for a native engine it calls through
BLS."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from contract import Batching, EncoderHostParams, TorchGraphParams
from export.configs import Tensor, native_engine, numpy_dtype, on_gpu, python_model, unbatched_engine
from export.request import ONNX_RUNTIMES
from export.towers.base import Tower, TritonModel

if TYPE_CHECKING:
    from export.checkpoint import Plan
    from export.request import ExportRequest, Serving

HOST_SHELL = "encoder_host_model"


def engine_models(
    tower: Tower,
    p: Plan,
    request: ExportRequest,
    inputs: list[Tensor],
    outputs: list[Tensor],
    batching: Batching,
    max_batch: int | None = None,
    max_patches: int = 0,
    call_rows: int = EncoderHostParams.max_rows,
) -> list[TritonModel]:
    """`inputs` / `outputs` per request (no batch axis). A Python host takes ragged batches unless it
    concatenates fixed shapes, with up to `max_batch` rows per execute (default: the serving max batch);
    a host in front of a native engine sends it at most `call_rows` rows a call (its profile's)."""
    name, serving = tower.engine_model(request), request.serving
    ragged = batching != "concatenate"
    threads = serving.intra_op_threads
    if request.target in ONNX_RUNTIMES:
        runtime, dtype, padding = ONNX_RUNTIMES[request.target], "float32", EncoderHostParams.max_padding
        if runtime == "openvino":
            serving = cpu_instances(serving, p)
            dtype, threads, padding = request.resolved_dtype(p), serving.intra_op_threads, OPENVINO_MAX_PADDING
        host = EncoderHostParams(
            batching,
            "model.onnx",
            threads,
            max_padding=padding,
            max_patches=max_patches,
            sparse_source=tower.head.sparse_source,
            onnx_runtime=runtime,
            onnx_dtype=dtype,
        )
        config = python_model(name, inputs, outputs, [host], serving, engine=True, max_batch=max_batch, ragged=ragged)
        return [TritonModel(config, HOST_SHELL)]
    if request.target == "torch":
        gpu = on_gpu(request.target, request.gpu)
        if not gpu:
            serving = cpu_instances(serving, p)
        host = EncoderHostParams(
            batching, "", serving.intra_op_threads, max_patches=max_patches, sparse_source=tower.head.sparse_source
        )
        blocks = [host, torch_params(tower, p, request)]
        config = python_model(
            name, inputs, outputs, blocks, serving, engine=True, max_batch=max_batch, ragged=ragged, gpu=gpu
        )
        return [TritonModel(config, HOST_SHELL, graph_code=True)]
    if not tower.behind_host(request):
        return [TritonModel(native_engine(name, inputs, outputs, request.target, serving, request.gpu))]
    engine_inputs, engine_outputs = tower.engine_io(p)
    gpu = on_gpu(request.target, request.gpu)
    engine = unbatched_engine(f"{name}_engine", engine_inputs, engine_outputs, request.target, gpu)
    types = tuple(f"{t.name}:{numpy_dtype(t.data_type)}" for t in engine_inputs)
    host = EncoderHostParams(
        batching,
        "",
        threads,
        engine.name,
        types,
        max_rows=call_rows,
        max_patches=max_patches,
        sparse_source=tower.head.sparse_source,
    )
    config = python_model(name, inputs, outputs, [host], serving, engine=True, max_batch=max_batch, ragged=ragged)
    return [TritonModel(config, HOST_SHELL), TritonModel(engine)]


# OpenVINO pays more per call than ONNX Runtime and less per padded token (bf16 on AMX), so its host cuts a
# call into length-sorted micro-batches only past 2 padded tokens per real one, not ONNX Runtime's 0.25.
# all-MiniLM-L6-v2 in bf16 on the 2-core AMX Xeon, three alternating rounds: one text per request
# 229 → 249 requests/s, 32 per request 709 → 768 texts/s (0.25 → no limit); 2.0 served the same as no limit
# and still keeps a few rows of very different lengths apart.
OPENVINO_MAX_PADDING = 2.0

# A PyTorch host on the CPU runs one instance per core, one thread each, while its weights are small: two
# single-thread instances on 2 cores served all-MiniLM-L6-v2 in bf16 at 522 texts/s (32 per request,
# concurrency 16), one instance of two threads at 405 (its threads wait for each other while the
# preprocessor and the adapter take turns on the cores). Larger weights: one instance, every core.
ONE_INSTANCE_PER_CORE_BYTES = 2 * 1024**3


def cpu_instances(serving: Serving, p: Plan, cores: int | None = None) -> Serving:
    """The torch CPU host's instances and threads where the export's defaults (1 instance, 0 threads)
    leave them to be chosen for the cores there are; settings given are kept."""
    import os

    if (serving.encoder_instances, serving.intra_op_threads) != (1, 0):
        return serving
    weights = sum(f.stat().st_size for f in Path(p.transformer_dir).glob("*.safetensors"))
    if weights > ONE_INSTANCE_PER_CORE_BYTES:
        return serving
    return replace(serving, encoder_instances=cores or os.cpu_count() or 1, intra_op_threads=1)


def torch_params(tower: Tower, p: Plan, request: ExportRequest) -> TorchGraphParams:
    """What a `torch` host needs to build the tower's graph from the weights beside it."""
    from graphs import builder_path

    settings = p.graph_settings
    engine_inputs, engine_outputs = tower.engine_io(p)
    return TorchGraphParams(
        graph=builder_path(tower.graph),
        auto_class=p.family.auto_class,
        tower=tower.name,
        dtype=request.resolved_dtype(p),
        attention=p.attention,
        pooling=settings.pooling,
        normalize=settings.normalize,
        inputs=tuple(t.name for t in engine_inputs),
        outputs=tuple(t.name for t in engine_outputs),
        decoder=p.family.decoder,
        image_token_id=-1 if settings.image_token_id is None else settings.image_token_id,
        score_tokens=settings.score_tokens or (),
        dropped_ids=settings.dropped_ids,
    )

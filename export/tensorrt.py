"""Build a TensorRT plan from the exported ONNX graph and check it against ONNX Runtime.

Needs an NVIDIA GPU and the `tensorrt` package of the *serving* container's version
(a plan only loads in the TensorRT that built it). Networks are strongly typed
(TensorRT ≥ 10.12 prefers it, 11 requires it): the precision comes from the ONNX
tensor types, so export the graph in fp16/bf16 first (`--dtype`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.errors import ExportError
from export.request import Shapes

# The TensorRT version of the serving image (`tritonserver:<NGC_RELEASE>-py3`), set by deploy/export.Dockerfile:
# a plan only loads in the TensorRT that built it.
SERVING_TENSORRT_ENV = "SERVING_TENSORRT_VERSION"


def _tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise ExportError("the tensorrt target needs the `tensorrt` package and an NVIDIA GPU") from exc
    return trt


def check_tensorrt() -> None:
    """Before an hour of work: the `tensorrt` package, a GPU, and the serving image's TensorRT version."""
    import os

    import torch

    trt = _tensorrt()
    if not torch.cuda.is_available():
        raise ExportError("the tensorrt target needs an NVIDIA GPU, and PyTorch sees none")
    wanted = os.environ.get(SERVING_TENSORRT_ENV, "")
    if wanted and not (trt.__version__ == wanted or trt.__version__.startswith(f"{wanted}.")):
        raise ExportError(
            f"this tensorrt is {trt.__version__}, the serving image's is {wanted} ({SERVING_TENSORRT_ENV}): "
            "a plan only loads in the TensorRT that built it; export with the image of the same NGC release"
        )


def gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


@dataclass(frozen=True)
class EngineMemory:
    """What one engine instance holds on its GPU, as TensorRT reports it."""

    plan_bytes: int  # the serialised plan: its weights, and kernels
    activation_bytes: int  # `device_memory_size_v2`: the execution context's memory at the largest profile shape

    def __str__(self) -> str:
        return (
            f"{gib(self.plan_bytes)} plan (weights) + {gib(self.activation_bytes)} activations at the profile's "
            f"largest shape: about {gib(self.plan_bytes + self.activation_bytes)} of GPU memory per instance"
        )


def _made(thing, what: str):
    """TensorRT's Python API answers most failures with None (its log says why), never an exception."""
    if thing is None:
        raise ExportError(f"TensorRT could not {what}; see its log above")
    return thing


def build_engine(onnx_path: Path, plan_path: Path, shapes: Shapes, workspace_mib: int = 8192) -> None:
    """Parse the ONNX file (external data resolves beside it) and serialise a strongly typed plan."""
    trt = _tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = _made(trt.Builder(logger), "create a builder (is a GPU visible?)")
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = _made(builder.create_network(flags), "create a network")
    parser = _made(trt.OnnxParser(network, logger), "create an ONNX parser")
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = _made(builder.create_builder_config(), "create a builder config")
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    opt = _made(builder.create_optimization_profile(), "create an optimisation profile")
    for name, (lo, mid, hi) in shapes.items():
        opt.set_shape(name, lo, mid, hi)
    if config.add_optimization_profile(opt) < 0:
        raise ExportError(f"TensorRT refused the optimisation profile {shapes}; see its log above")
    serialized = _made(builder.build_serialized_network(network, config), "build the engine")
    # Straight from TensorRT's buffer: `bytes()` would first copy a plan as big as the weights.
    with plan_path.open("wb") as f:
        f.write(memoryview(serialized))


def run_engine(
    plan_path: Path, batches: list[dict[str, np.ndarray]]
) -> tuple[list[dict[str, np.ndarray]], EngineMemory]:
    """Run the plan on each batch on the GPU (torch CUDA tensors as buffers): every output by name; and
    what the plan holds there."""
    import torch

    trt = _tensorrt()
    runtime = _made(trt.Runtime(trt.Logger(trt.Logger.WARNING)), "create a runtime")
    plan = plan_path.read_bytes()
    engine = _made(runtime.deserialize_cuda_engine(plan), f"deserialise {plan_path}")
    context = _made(engine.create_execution_context(), "create an execution context (out of GPU memory?)")
    memory = EngineMemory(len(plan), int(engine.device_memory_size_v2))
    del plan
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]  # the head's
    results = []
    for feeds in batches:
        # An empty tensor (GME's text-only `image_embeds`) still gets a real address.
        tensors = {name: torch.from_numpy(array).cuda() for name, array in feeds.items()}
        keep = [torch.empty(1, device="cuda") for t in tensors.values() if t.numel() == 0]
        spare = iter(keep)
        for name, tensor in tensors.items():
            if not context.set_input_shape(name, tuple(tensor.shape)):
                raise ExportError(f"the engine's profile does not take {name} of shape {tuple(tensor.shape)}")
            address = tensor.data_ptr() if tensor.numel() else next(spare).data_ptr()
            context.set_tensor_address(name, address)
        out = {n: torch.empty(tuple(context.get_tensor_shape(n)), dtype=torch.float32, device="cuda") for n in outputs}
        for name, tensor in out.items():
            context.set_tensor_address(name, tensor.data_ptr())
        stream = torch.cuda.Stream()
        if not context.execute_async_v3(stream.cuda_stream):
            raise ExportError("TensorRT execution failed; see its log above")
        stream.synchronize()
        results.append({name: tensor.cpu().numpy() for name, tensor in out.items()})
    return results, memory

"""`python -m export CHECKPOINT --name NAME --target local|onnxruntime|tensorrt|torch`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from contract import TASKS, TRUNCATE_MODES
from export.build import Progress, export
from export.errors import ExportError
from export.request import TARGETS, TENSORRT_TOKENS_PER_CALL, ExportRequest, Profile, Serving


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    ap.add_argument("checkpoint", type=Path, help="Hugging Face or sentence-transformers checkpoint folder")
    ap.add_argument("--name", help="Triton model name (default: the folder name)")
    ap.add_argument("--hf-id", default="", help="Hugging Face id the API also answers to")
    ap.add_argument("--alias", action="append", default=[], help="another model name for the API (repeatable)")
    ap.add_argument(
        "--target",
        choices=TARGETS,
        default="auto",
        help="engine target (default: auto, the fastest CPU engine measured here among local, torch and torch in "
        "bf16 where the CPU has bf16 instructions; local: ONNX Runtime in Triton's Python backend; torch: the "
        "PyTorch graph there, no engine build; onnxruntime, tensorrt: Triton's own backends)",
    )
    ap.add_argument("--repository", type=Path, default=Path("model_repository"), help="model repository folder")
    ap.add_argument("--max-length", type=int, help="token limit (default: the checkpoint's)")
    ap.add_argument(
        "--task",
        choices=TASKS,
        help="embed, or rerank (default: rerank for a *ForSequenceClassification checkpoint, else embed)",
    )
    ap.add_argument(
        "--external-data",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="store ONNX weights in model.onnx.data (default: only when over 1.5 GB)",
    )
    ap.add_argument("--gpu", action="store_true", help="run the onnxruntime or torch target on the GPU")
    ap.add_argument(
        "--attention",
        choices=("causal", "bidirectional"),
        help="decoder attention (default: read from the checkpoint; gte-Qwen2 is bidirectional)",
    )
    ap.add_argument(
        "--dtype",
        choices=("float32", "float16", "bfloat16"),
        help="engine precision (default: float32 on the CPU, the family's choice on the GPU)",
    )
    ap.add_argument(
        "--profile", help="tensorrt profile min,opt,max batch[:min,opt,max sequence], e.g. 1,8,32:1,512,4096"
    )
    ap.add_argument(
        "--tensorrt-tokens",
        type=int,
        default=TENSORRT_TOKENS_PER_CALL,
        help="the default TensorRT profile's largest call, rows × tokens: every length up to the token limit, "
        f"with as many rows as fit (default: {TENSORRT_TOKENS_PER_CALL}); TensorRT reserves activation memory for it",
    )
    ap.add_argument("--workspace-mib", type=int, default=8192, help="TensorRT builder workspace in MiB (default: 8192)")
    ap.add_argument("--min-pixels", type=int, help="GME image lower bound (default: the authors' 256·28·28)")
    ap.add_argument("--max-pixels", type=int, help="GME image upper bound (default: the authors' 1280·28·28)")
    ap.add_argument(
        "--max-batch-size",
        type=int,
        help=f"rows per request into the ensemble (default: {Serving.max_batch_size}; tensorrt: the profile's)",
    )
    ap.add_argument("--encoder-max-batch-size", type=int, default=Serving.encoder_max_batch_size)
    ap.add_argument("--queue-delay-us", type=int, default=Serving.queue_delay_us, help="encoder batching delay")
    ap.add_argument("--preprocess-queue-delay-us", type=int, default=Serving.preprocess_queue_delay_us)
    ap.add_argument(
        "--max-queue-size", type=int, default=Serving.max_queue_size, help="requests each model queues (full: 503)"
    )
    ap.add_argument(
        "--queue-timeout-us",
        type=int,
        default=Serving.queue_timeout_us,
        help="longest wait in a model's queue when a request names no deadline",
    )
    ap.add_argument("--preprocess-instances", type=int, default=Serving.preprocess_instances)
    ap.add_argument("--encoder-instances", type=int, default=Serving.encoder_instances)
    ap.add_argument("--intra-op-threads", type=int, default=Serving.intra_op_threads)
    ap.add_argument(
        "--truncate",
        choices=TRUNCATE_MODES,
        default=Serving.default_truncate,
        help="default truncation of over-long input",
    )
    return ap.parse_args(argv)


def serving_from_args(args: argparse.Namespace) -> Serving:
    """The batching and instance flags as the `Serving` of the generated configs."""
    max_batch = args.max_batch_size
    if max_batch is None:  # the engine's profile bounds the batch Triton may send it
        max_batch = Profile.parse(args.profile, 1).max_batch if args.profile else Serving.max_batch_size
    return Serving(
        max_batch_size=max_batch,
        encoder_max_batch_size=args.encoder_max_batch_size,
        queue_delay_us=args.queue_delay_us,
        preprocess_queue_delay_us=args.preprocess_queue_delay_us,
        max_queue_size=args.max_queue_size,
        queue_timeout_us=args.queue_timeout_us,
        preprocess_instances=args.preprocess_instances,
        encoder_instances=args.encoder_instances,
        intra_op_threads=args.intra_op_threads,
        default_truncate=args.truncate,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.name is not None and not args.name.strip():
        Progress().console.print("[red]export failed:[/] --name is empty (with docker compose: set MODEL_NAME)")
        return 1
    try:
        serving = serving_from_args(args)
    except ValueError as exc:
        Progress().console.print(f"[red]export failed:[/] {exc}")
        return 1
    request = ExportRequest(
        checkpoint=args.checkpoint.resolve(),
        repository=args.repository.resolve(),
        name=args.name or args.checkpoint.resolve().name,
        target=args.target,
        hf_id=args.hf_id,
        task=args.task,
        aliases=tuple(args.alias),
        max_length=args.max_length,
        external_data=args.external_data,
        gpu=args.gpu,
        attention=args.attention,
        dtype=args.dtype,
        profile=args.profile,
        tensorrt_tokens=args.tensorrt_tokens,
        batch_from_profile=args.max_batch_size is None,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
        workspace_mib=args.workspace_mib,
        serving=serving,
    )
    progress = Progress()
    try:
        export(request, progress)
    except (ExportError, ValueError) as exc:
        progress.console.print(f"[red]export failed:[/] {exc}")
        return 1
    progress.console.print(f"[bold]{request.name}[/] is ready in {request.repository}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

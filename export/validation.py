"""Fixed validation inputs per tower, the runtime that checks an exported graph, and its tolerance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from export.checkpoint import Plan
from export.errors import ExportError
from export.graph import torch_reference
from export.specs import Dtype
from runtime.images import clip_pixels
from runtime.qwen2vl import image_mark, patches, vision_positions
from runtime.text import encode, frame_all, pad

# Fixed validation inputs: short and long, ASCII and not, so padding is exercised.
VALIDATION_TEXTS = (
    "a cat",
    "The quick brown fox jumps over the lazy dog.",
    "Triton serves embeddings; ONNX Runtime runs them on the CPU. " * 12,
    "Ünïcödé, 中文, emoji 🚀 and numbers 12345.",
)
VALIDATION_IMAGE_SIZES = ((640, 480), (300, 500), (336, 336))


def validation_images() -> list[Image.Image]:
    """Deterministic RGB gradients of several sizes and aspect ratios."""
    images = []
    for w, h in VALIDATION_IMAGE_SIZES:
        x, y = np.meshgrid(np.linspace(0, 255, w), np.linspace(0, 255, h))
        rgb = np.stack([x, y, (x + y) / 2 % 256], axis=-1).astype(np.uint8)
        images.append(Image.fromarray(rgb, "RGB"))
    return images


def _gme_vision_feeds(p: Plan) -> dict[str, np.ndarray]:
    """The validation images packed as one call: patches, positions, and which image each patch belongs to."""
    assert p.vision is not None
    parts = [patches(img, p.vision) for img in validation_images()]
    return {
        "pixel_values": np.concatenate([x for x, _, _ in parts]),
        "position_ids": np.concatenate([vision_positions(gh, gw, p.vision.merge_size) for _, gh, gw in parts]),
        "segment_ids": np.concatenate([np.full(len(x), i, dtype=np.int64) for i, (x, _, _) in enumerate(parts)]),
    }


def validation_feeds(p: Plan, tower: str, graphs: dict[str, torch.nn.Module] | None = None) -> dict[str, np.ndarray]:
    """Fixed inputs of each tower; GME's text tower also gets a prompt with a real image's features."""
    if tower == "image" and p.vision is not None:
        return _gme_vision_feeds(p)
    if tower == "image":
        assert p.image is not None
        return {"pixel_values": np.stack([clip_pixels(img, p.image) for img in validation_images()])}
    texts = list(VALIDATION_TEXTS)
    if p.vision is None:
        batch = pad(frame_all(encode(p.tokenizer, texts), p.layout, "END"), p.layout)
        return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    assert graphs is not None, "GME's text validation needs the vision graph for its image row"
    image, grid_h, grid_w = patches(validation_images()[0], p.vision)
    pads = grid_h * grid_w // p.vision.merge_size**2
    prompts = [p.document_template.format(instruction=p.default_instruction, text=t) for t in texts]
    prompts.append(p.document_template.format(instruction=p.default_instruction, text=image_mark(pads) + texts[0]))
    batch = pad(frame_all(encode(p.tokenizer, prompts), p.layout, "END"), p.layout)
    single = {
        "pixel_values": image,
        "position_ids": vision_positions(grid_h, grid_w, p.vision.merge_size),
        "segment_ids": np.zeros(len(image), dtype=np.int64),
    }
    features = torch_reference(graphs["image"], *single.values())
    return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "image_embeds": features}


def cuda_onnxruntime() -> bool:
    """Whether this ONNX Runtime can run on the GPU (the only place it has bf16 kernels)."""
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def onnx_session(path: Path, dtype: Dtype):
    """ONNX Runtime on the GPU when it has one; bf16 graphs cannot run on its CPU kernels."""
    import onnxruntime as ort

    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    if dtype == "bfloat16" and "CUDAExecutionProvider" not in providers:
        raise ExportError(
            "a bfloat16 graph can only be validated on a GPU (ONNX Runtime has no bf16 CPU kernels); "
            "export on the GPU host, or pass --dtype float32"
        )
    return ort.InferenceSession(str(path), providers=providers)


# (max |error|, min cosine) of an fp16 / bf16 engine against PyTorch in the same dtype. On an H200,
# `python -m bench.gpu_graphs` measured each graph against itself in fp32 at the real shapes: fp16 keeps
# a minimum cosine of 0.99989 (e5-mistral) … 0.999999, bf16 (8 mantissa bits) only 0.9959 (e5-mistral),
# 0.9977 (gte-Qwen2), 0.9994 (GME's LM). Two bf16 implementations each that far from fp32 can be
# ~0.992 from each other, so bf16 is held to 0.99 and fp16 to 0.999.
REDUCED_PRECISION_TOLERANCE: dict[str, tuple[float, float]] = {"float16": (2e-2, 0.999), "bfloat16": (2e-2, 0.99)}


def tolerance(p: Plan, dtype: Dtype) -> tuple[float, float]:
    return (p.spec.atol, p.spec.min_cosine) if dtype == "float32" else REDUCED_PRECISION_TOLERANCE[dtype]

"""Qwen2-VL image preprocessing and image items, as the GME authors' recipe and Hugging Face compute them.

An image goes through two resizes, as in the authors' `gme_inference.py`:
1. `fetch_resize` is their `fetch_image` (copied there from qwen_vl_utils): to multiples of 28 within
   4·28² … 16384·28² pixels, aspect ratio clamped to 200, PIL `resize` with its default filter.
2. `patches` reproduces Qwen2VLImageProcessor on that image: RGB, `smart_resize` to multiples of 28
   within [min_pixels, max_pixels], PIL bicubic, rescale 1/255, CLIP mean/std, the frame repeated to
   `temporal_patch_size`, patches flattened block-major into `[grid_h·grid_w, 3·2·14·14]`.
Step 1 changes the pixels (and for some sizes the image-token count) of every image whose size is not
already a multiple of 28, so skipping it is not an approximation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from contract import PatchImageParams
from runtime.errors import InputError
from runtime.images import decode_image
from runtime.text import Partial, Prompt, TextLayout, apply_prompt, encode_bounded, frame, room_of

IMAGE_MARK = "<|vision_start|><|image_pad|><|vision_end|>"
# fetch_image's own bounds and aspect-ratio clamp (qwen_vl_utils' IMAGE_FACTOR, MIN_PIXELS, MAX_PIXELS, MAX_RATIO)
FETCH_FACTOR, FETCH_MIN_PIXELS, FETCH_MAX_PIXELS, FETCH_MAX_RATIO = 28, 4 * 28 * 28, 16384 * 28 * 28, 200


@dataclass(frozen=True)
class VisionSpec:
    min_pixels: int
    max_pixels: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2

    @classmethod
    def of(cls, params: PatchImageParams) -> VisionSpec:
        return cls(
            params.min_pixels,
            params.max_pixels,
            params.image_mean,  # type: ignore[arg-type]
            params.image_std,  # type: ignore[arg-type]
            params.patch_size,
            params.merge_size,
            params.temporal_patch_size,
        )

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size


def smart_resize(
    height: int, width: int, factor: int, min_pixels: int, max_pixels: int, index: int = 0
) -> tuple[int, int]:
    """Qwen2-VL's target size: multiples of `factor`, pixel count within bounds, aspect ratio kept."""
    if max(height, width) / min(height, width) > 200:
        raise InputError(
            f"input[{index}]: the image's aspect ratio {max(height, width) / min(height, width):.0f} "
            "exceeds 200, which Qwen2-VL cannot embed"
        )
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def fetch_size(height: int, width: int, index: int = 0) -> tuple[int, int]:
    """`fetch_image`'s target size: its `smart_resize` (floor of one factor, no error on the aspect ratio,
    which is clamped to 200 instead)."""
    f = FETCH_FACTOR
    h_bar, w_bar = max(f, round(height / f) * f), max(f, round(width / f) * f)
    if h_bar * w_bar > FETCH_MAX_PIXELS:
        beta = math.sqrt((height * width) / FETCH_MAX_PIXELS)
        h_bar, w_bar = math.floor(height / beta / f) * f, math.floor(width / beta / f) * f
    elif h_bar * w_bar < FETCH_MIN_PIXELS:
        beta = math.sqrt(FETCH_MIN_PIXELS / (height * width))
        h_bar, w_bar = math.ceil(height * beta / f) * f, math.ceil(width * beta / f) * f
    if min(h_bar, w_bar) == 0:  # the reference divides by zero here
        raise InputError(f"input[{index}]: the image ({width}×{height} pixels) is too thin to embed")
    if max(h_bar, w_bar) / min(h_bar, w_bar) > FETCH_MAX_RATIO:
        if h_bar > w_bar:
            h_bar = w_bar * FETCH_MAX_RATIO
        else:
            w_bar = h_bar * FETCH_MAX_RATIO
    return h_bar, w_bar


def fetch_resize(image: Image.Image, index: int = 0) -> Image.Image:
    """The authors' `fetch_image` resize, before the processor's own (PIL's default filter, as they call it)."""
    height, width = fetch_size(image.height, image.width, index)
    return image.resize((width, height))


def patches(image: Image.Image, spec: VisionSpec, index: int = 0) -> tuple[np.ndarray, int, int]:
    """RGB image → (`pixel_values [grid_h·grid_w, 1176]` float32, grid_h, grid_w)."""
    height, width = smart_resize(image.height, image.width, spec.factor, spec.min_pixels, spec.max_pixels, index)
    resized = np.asarray(image.resize((width, height), resample=Image.BICUBIC)).transpose(2, 0, 1)
    scaled = (resized.astype(np.float64) * (1 / 255)).astype(np.float32)
    mean = np.asarray(spec.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(spec.std, dtype=np.float32)[:, None, None]
    pixels = (scaled - mean) / std
    p, m, t = spec.patch_size, spec.merge_size, spec.temporal_patch_size
    gh, gw = height // p, width // p
    blocks = pixels.reshape(3, gh // m, m, p, gw // m, m, p).transpose(1, 4, 2, 5, 0, 3, 6)
    blocks = np.broadcast_to(blocks[:, :, :, :, :, None], (*blocks.shape[:5], t, p, p))
    return np.ascontiguousarray(blocks.reshape(gh * gw, 3 * t * p * p), dtype=np.float32), gh, gw


def vision_positions(grid_h: int, grid_w: int, merge: int) -> np.ndarray:
    """`[grid_h·grid_w, 2]` (row, column) of each patch, block-major like the patches."""
    h, w = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")
    shape = (grid_h // merge, merge, grid_w // merge, merge)
    return np.stack(
        [h.reshape(shape).transpose(0, 2, 1, 3).ravel(), w.reshape(shape).transpose(0, 2, 1, 3).ravel()], axis=-1
    ).astype(np.int64)


def image_mark(pads: int) -> str:
    """`<|vision_start|>` + `pads` × `<|image_pad|>` + `<|vision_end|>`, as the processor expands it."""
    return IMAGE_MARK.replace("<|image_pad|>", "<|image_pad|>" * pads)


@dataclass(frozen=True)
class GmeItem:
    """One image item ready for the vision tower and the LM."""

    ids: list[int]
    pixel_values: np.ndarray  # [patches, 1176]
    position_ids: np.ndarray  # [patches, 2]


def gme_item(
    data: bytes,
    text: str | None,
    input_type: str | None,
    instruction: str | None,
    tokenizer,
    layout: TextLayout,
    prompt: Prompt,
    spec: VisionSpec,
    max_decoded_pixels: int,
    index: int = 0,
) -> GmeItem:
    """Decode, resize twice (fetch_image, then the processor) and patch the image; build the authors'
    prompt with the pads expanded; tokenise.

    The image marker comes first, directly followed by the text (no newline), as in gme_inference.py.
    An item whose prompt exceeds the token limit is refused: cutting it would drop image pads or the EOS.
    """
    image = fetch_resize(decode_image(data, max_decoded_pixels, index), index)
    pixels, grid_h, grid_w = patches(image, spec, index)
    pads = grid_h * grid_w // (spec.merge_size**2)
    (templated,) = apply_prompt([image_mark(pads) + (text or "")], input_type, instruction, prompt)
    # never truncated, so a long text is refused from its first part (runtime/text.py: encode_bounded)
    (content,) = encode_bounded(tokenizer, [templated], ["NONE"], room_of(layout))
    total = len(layout.prefix_ids) + len(content) + len(layout.suffix_ids)
    if total > layout.max_length:
        count = f"more than {total - 1}" if isinstance(content, Partial) else str(total)
        raise InputError(
            f"input[{index}] has {count} tokens, {pads} of them for the image; the maximum is {layout.max_length} "
            "(image items are never truncated)"
        )
    ids = frame(content, layout, "NONE", index)
    return GmeItem(ids, pixels, vision_positions(grid_h, grid_w, spec.merge_size))

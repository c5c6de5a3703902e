"""The authors' image loading for GME, transcribed from `gme_inference.py` (its copy of qwen_vl_utils'
`fetch_image`), kept apart from `runtime/` so the tests compare two independent implementations."""

from __future__ import annotations

import math

from PIL import Image

IMAGE_FACTOR = 28
MIN_PIXELS = 4 * 28 * 28
MAX_PIXELS = 16384 * 28 * 28
MAX_RATIO = 200


def _smart_resize(height: int, width: int) -> tuple[int, int]:
    h_bar = max(IMAGE_FACTOR, round(height / IMAGE_FACTOR) * IMAGE_FACTOR)
    w_bar = max(IMAGE_FACTOR, round(width / IMAGE_FACTOR) * IMAGE_FACTOR)
    if h_bar * w_bar > MAX_PIXELS:
        beta = math.sqrt((height * width) / MAX_PIXELS)
        h_bar = math.floor(height / beta / IMAGE_FACTOR) * IMAGE_FACTOR
        w_bar = math.floor(width / beta / IMAGE_FACTOR) * IMAGE_FACTOR
    elif h_bar * w_bar < MIN_PIXELS:
        beta = math.sqrt(MIN_PIXELS / (height * width))
        h_bar = math.ceil(height * beta / IMAGE_FACTOR) * IMAGE_FACTOR
        w_bar = math.ceil(width * beta / IMAGE_FACTOR) * IMAGE_FACTOR
    if max(h_bar, w_bar) / min(h_bar, w_bar) > MAX_RATIO:
        if h_bar > w_bar:
            h_bar = w_bar * MAX_RATIO
        else:
            w_bar = h_bar * MAX_RATIO
    return h_bar, w_bar


def fetch_image(image: Image.Image) -> Image.Image:
    """`fetch_image` for an already opened image: RGB, then its smart_resize and PIL's default resize."""
    image = image.convert("RGB")
    width, height = image.size
    resized_height, resized_width = _smart_resize(height, width)
    return image.resize((resized_width, resized_height))


def processor(min_pixels: int, max_pixels: int):
    """Hugging Face's Qwen2-VL image processor with the authors' (or a test's) bounds."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)

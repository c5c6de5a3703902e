"""Image decoding and CLIP preprocessing, inside Triton (the adapter only fetches bytes).

`clip_pixels` reproduces Hugging Face's CLIPImageProcessor: RGB, shortest edge to
`size` with PIL bicubic, centre crop, rescale 1/255, normalise with mean/std.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

from contract import FixedImageParams
from runtime.decode_work import check_decode_work
from runtime.errors import InputError
from runtime.resample import resized_window


@dataclass(frozen=True)
class ClipImageSpec:
    shortest_edge: int
    crop_height: int
    crop_width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: int = 3  # PIL bicubic

    @classmethod
    def of(cls, params: FixedImageParams) -> ClipImageSpec:
        return cls(
            params.shortest_edge,
            params.crop_height,
            params.crop_width,
            params.image_mean,  # type: ignore[arg-type]
            params.image_std,  # type: ignore[arg-type]
            params.resample,
        )


MAX_ENLARGED_RATIO = 16  # long ÷ short side of an image enlarged by a filter other than bicubic
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")  # what clients send; Pillow's other plugins are not opened


def decode_image(data: bytes, max_pixels: int, index: int = 0) -> Image.Image:
    """Encoded bytes → RGB image; refuses empty data, other formats and more than `max_pixels` pixels.

    The decode work is bounded first (`runtime/decode_work.py`: JPEG scans, PNG chunks), then the size
    is read from the header before any pixel is decoded. A JPEG above the cap is decoded at
    a reduced scale (1/2, 1/4 or 1/8, Pillow's draft) when that brings it under the cap, since it would
    be refused otherwise; any other image above the cap is refused. Any failure of any decoder is this
    item's own error: a crafted file must not fail the other requests of a batch.
    """
    if not data:
        raise InputError(f"input[{index}]: the image is empty")
    check_decode_work(data, max_pixels, index)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            width, height = image.size
            if width * height > max_pixels and image.format == "JPEG":
                _draft_under(image, max_pixels)
                width, height = image.size
            if width * height > max_pixels:
                raise InputError(f"input[{index}]: the image has {width}×{height} pixels; the maximum is {max_pixels}")
            image.load()
            rgb = image if image.mode == "RGB" else image.convert("RGB")
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"input[{index}]: the image has too many pixels; the maximum is {max_pixels}") from exc
    except Image.UnidentifiedImageError as exc:
        raise InputError(f"input[{index}]: not an image in a supported format ({', '.join(FORMATS)})") from exc
    except Exception as exc:  # noqa: BLE001 -- any decoder failure is the item's, never the batch's
        raise InputError(f"input[{index}]: cannot decode the image ({type(exc).__name__})") from exc
    if width < 1 or height < 1:
        raise InputError(f"input[{index}]: the image has no pixels")
    return rgb


def _draft_under(image: Image.Image, max_pixels: int) -> None:
    """Ask the JPEG decoder for the largest scale of 1/2, 1/4, 1/8 that fits the cap (no-op if none does)."""
    width, height = image.size
    for scale in (2, 4, 8):
        if (width // scale) * (height // scale) <= max_pixels:
            image.draft("RGB", (width // scale, height // scale))
            return


def shortest_edge_size(width: int, height: int, size: int) -> tuple[int, int]:
    """Hugging Face's `get_resize_output_image_size(..., default_to_square=False)`: the short side
    becomes `size`, the long one keeps the aspect ratio (truncated)."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def resized_crop(image: Image.Image, spec: ClipImageSpec, index: int = 0) -> np.ndarray:
    """`[H, W, 3]` uint8: the part of the shortest-edge resize that the centre crop keeps, exactly.

    A resize that shrinks (or keeps) both sides costs no more than the decode and runs in Pillow. One
    that enlarges grows with the aspect ratio (a 65,536×1 image would become 14.7 M × 224 pixels), so only
    the crop's window of it is computed (`runtime/resample.py`, bicubic; other filters are refused
    beyond an aspect ratio of `MAX_ENLARGED_RATIO`).
    """
    width, height = image.size
    new_w, new_h = shortest_edge_size(width, height, spec.shortest_edge)
    left, top = max(0, (new_w - spec.crop_width) // 2), max(0, (new_h - spec.crop_height) // 2)
    box = (left, top, min(new_w, left + spec.crop_width), min(new_h, top + spec.crop_height))
    if min(width, height) >= spec.shortest_edge:
        resized = np.asarray(image.resize((new_w, new_h), resample=spec.resample))
        return resized[box[1] : box[3], box[0] : box[2]]
    if spec.resample == Image.Resampling.BICUBIC:
        return resized_window(np.asarray(image), (new_w, new_h), box)
    if max(width, height) > MAX_ENLARGED_RATIO * min(width, height):
        raise InputError(f"input[{index}]: the image's aspect ratio exceeds {MAX_ENLARGED_RATIO}")
    return np.asarray(image.resize((new_w, new_h), resample=spec.resample))[box[1] : box[3], box[0] : box[2]]


def _center_crop(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """`[C, H, W]` centre crop as Hugging Face computes it (pads with zeros when the image is smaller)."""
    _, h, w = array.shape
    if h < height or w < width:
        padded = np.zeros((array.shape[0], max(h, height), max(w, width)), dtype=array.dtype)
        top, left = (padded.shape[1] - h) // 2, (padded.shape[2] - w) // 2
        padded[:, top : top + h, left : left + w] = array
        array, (_, h, w) = padded, padded.shape
    top, left = (h - height) // 2, (w - width) // 2
    return array[:, top : top + height, left : left + width]


def clip_pixels(image: Image.Image, spec: ClipImageSpec, index: int = 0) -> np.ndarray:
    """RGB image → normalised `pixel_values [3, crop_height, crop_width]` float32."""
    cropped = _center_crop(resized_crop(image, spec, index).transpose(2, 0, 1), spec.crop_height, spec.crop_width)
    scaled = (cropped.astype(np.float64) * (1 / 255)).astype(np.float32)
    mean = np.asarray(spec.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(spec.std, dtype=np.float32)[:, None, None]
    return ((scaled - mean) / std).astype(np.float32)

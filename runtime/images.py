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

from runtime.contract import FixedImageParams
from runtime.errors import InputError


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


FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")  # what clients send; Pillow's other plugins are not opened


def decode_image(data: bytes, max_pixels: int, index: int = 0) -> Image.Image:
    """Encoded bytes → RGB image; refuses empty data, other formats and more than `max_pixels` pixels.

    The size is read from the header before any pixel is decoded. A JPEG above the cap is decoded at
    a reduced scale (1/2, 1/4 or 1/8, Pillow's draft) when that brings it under the cap, since it would
    be refused otherwise; any other image above the cap is refused. Any failure of any decoder is this
    item's own error: a crafted file must not fail the other requests of a batch.
    """
    if not data:
        raise InputError(f"input[{index}]: the image is empty")
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


def _resize_shortest_edge(image: Image.Image, size: int, resample: int) -> Image.Image:
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    return image.resize((new_w, new_h), resample=resample)


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


def clip_pixels(image: Image.Image, spec: ClipImageSpec) -> np.ndarray:
    """RGB image → normalised `pixel_values [3, crop_height, crop_width]` float32."""
    resized = np.asarray(_resize_shortest_edge(image, spec.shortest_edge, spec.resample)).transpose(2, 0, 1)
    cropped = _center_crop(resized, spec.crop_height, spec.crop_width)
    scaled = (cropped.astype(np.float64) * (1 / 255)).astype(np.float32)
    mean = np.asarray(spec.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(spec.std, dtype=np.float32)[:, None, None]
    return ((scaled - mean) / std).astype(np.float32)

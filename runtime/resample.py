"""Pillow's bicubic enlargement, computed for a window of its output only: what a centre crop keeps.

CLIP's processor resizes the shortest edge to 224 or 336 and then crops the centre. For a thin image
the resize is huge (a 1024×1 PNG of 74 bytes becomes 229,376×224) while the crop keeps 224×224 of it.
`resized_window` gives exactly the pixels Pillow's `Image.resize` gives inside the window, at a cost
bounded by the window and the filter's support: Pillow's own algorithm (`libImaging/Resample.c`:
`precompute_coeffs`, `normalize_coeffs_8bpc`, the horizontal pass then the vertical one, an 8-bit
intermediate, 22-bit fixed point), every double operation in Pillow's order, evaluated only at the
window's indices. Sums of integer-valued doubles are exact, so the order of those sums does not matter.

Only for resizes that shrink neither axis: Pillow 13 may run the vertical pass first when the height
shrinks more than the width, which rounds differently. A resize that shrinks costs no more than the
decode, so it can stay Pillow's own. Pillow's `box` argument is no substitute: it takes the box in
single precision and its pixels differ by up to 25 levels.
"""

from __future__ import annotations

import numpy as np

PRECISION_BITS = 32 - 8 - 2
BICUBIC_A = -0.5
BICUBIC_SUPPORT = 2.0


def _bicubic(x: np.ndarray) -> np.ndarray:
    """Pillow's `bicubic_filter` (a = -0.5), the same operations in the same order."""
    x = np.abs(x)
    a = BICUBIC_A
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _coefficients(in_size: int, out_size: int, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first input index, 22-bit fixed-point weights `[len(indices), ksize]`) of the given output
    indices of a resize from `in_size` to `out_size` over the whole input (`precompute_coeffs`)."""
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = BICUBIC_SUPPORT * filterscale
    ksize = int(np.ceil(support)) * 2 + 1
    center = 0.0 + (indices + 0.5) * scale
    ss = 1.0 / filterscale
    xmin = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)  # C's (int) cast, then clamp
    xmax = np.minimum(np.trunc(center + support + 0.5), in_size).astype(np.int64) - xmin
    taps = np.arange(ksize)
    inside = taps[None, :] < xmax[:, None]
    w = _bicubic(((taps[None, :] + xmin[:, None]).astype(np.float64) - center[:, None] + 0.5) * ss)
    w = np.where(inside, w, 0.0)
    ww = np.cumsum(w, axis=1)[:, -1]  # Pillow sums in tap order; cumsum keeps that order
    w = np.where(ww[:, None] != 0.0, w / np.where(ww == 0.0, 1.0, ww)[:, None], w)
    scaled = w * (1 << PRECISION_BITS)
    fixed = np.where(w < 0, np.trunc(-0.5 + scaled), np.trunc(0.5 + scaled))
    return xmin, np.where(inside, fixed, 0.0)


def _span(in_size: int, out_size: int, indices: np.ndarray) -> tuple[int, int]:
    """The input range the weights of the output `indices` touch: all a pass over them reads."""
    first, weights = _coefficients(in_size, out_size, indices)
    return int(first.min()), int(min(in_size, (first + weights.shape[1]).max()))


def _pass(pixels: np.ndarray, in_size: int, out_size: int, indices: np.ndarray, axis: int, offset: int):
    """One 8-bit pass along `axis` (1: horizontal, 0: vertical) of an `[H, W, C]` uint8 array, only at
    the output `indices`; `pixels` along `axis` is the input's `_span` of them, starting at `offset`."""
    first, weights = _coefficients(in_size, out_size, indices)
    moved = np.moveaxis(pixels, axis, 0).astype(np.float64)
    acc = np.full((len(indices), *moved.shape[1:]), float(1 << (PRECISION_BITS - 1)))
    for tap in range(weights.shape[1]):
        source = np.clip(first + tap - offset, 0, len(moved) - 1)  # outside the span the weight is zero
        acc += moved[source] * weights[:, tap].reshape(-1, *([1] * (moved.ndim - 1)))
    out = np.clip(np.floor(acc / (1 << PRECISION_BITS)), 0, 255)  # clip8: an arithmetic shift, saturated
    return np.moveaxis(out.astype(np.uint8), 0, axis)


def resized_window(pixels: np.ndarray, size: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """`np.asarray(Image.fromarray(pixels).resize(size, BICUBIC))[top:bottom, left:right]` for
    `box = (left, top, right, bottom)`, computed from only the rows and columns that window reads."""
    height, width = pixels.shape[:2]
    new_w, new_h = size
    left, top, right, bottom = box
    rows, cols = np.arange(top, bottom), np.arange(left, right)
    r0, r1 = _span(height, new_h, rows) if new_h != height else (top, bottom)
    c0, c1 = _span(width, new_w, cols) if new_w != width else (left, right)
    band = pixels[r0:r1, c0:c1]
    if new_w != width:
        band = _pass(band, width, new_w, cols, axis=1, offset=c0)
    if new_h != height:
        band = _pass(band, height, new_h, rows, axis=0, offset=r0)
    return band

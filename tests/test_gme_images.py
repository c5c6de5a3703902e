"""GME's image path against the authors' recipe at the real bounds: `fetch_image`, then the processor.

Pixel-exact, without a server: sizes below 256·28² and above 1280·28² pixels, odd sizes and extreme
aspect ratios (the served path is checked on the tiny checkpoint in test_e2e_gme.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from runtime.errors import InputError
from runtime.qwen2vl import VisionSpec, fetch_resize, fetch_size, patches
from tests.gme_reference import fetch_image, processor

MIN, MAX = 256 * 28 * 28, 1280 * 28 * 28  # the authors' processor bounds
SPEC = VisionSpec(MIN, MAX, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
SIZES = [
    (50, 40),  # a thumbnail: far below the lower bound
    (300, 200),  # below 256·28² = 200,704 pixels
    (448, 448),  # exactly the lower bound
    (333, 517),  # odd sizes inside the bounds: fetch_image still resizes to multiples of 28
    (1600, 1200),  # a 1.9 MP photo, above 1280·28²
    (4000, 3000),  # 12 MP
    (5000, 20),  # aspect ratio 250
    (6000, 1),  # fetch_image clamps the aspect ratio to 200
    (1, 300),
]


def image(width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(width * 10_007 + height)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), "RGB")


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_pixels_and_grid_equal_the_authors_recipe(width: int, height: int) -> None:
    img = image(width, height)
    ours, grid_h, grid_w = patches(fetch_resize(img), SPEC)
    expected = processor(MIN, MAX)([fetch_image(img)], return_tensors="np")
    assert [1, grid_h, grid_w] == expected["image_grid_thw"][0].tolist()  # so the image-token count too
    np.testing.assert_allclose(ours, expected["pixel_values"], atol=1e-5)


def test_skipping_fetch_image_would_differ() -> None:
    """The first resize matters: without it, this photo gets another patch count (and image-token count)."""
    img = image(333, 517)
    assert fetch_size(517, 333) == (504, 336)
    alone, _, _ = patches(img, SPEC)
    both, _, _ = patches(fetch_resize(img), SPEC)
    assert (len(alone), len(both)) == (1040, 1120)


def test_an_image_too_thin_for_the_reference_is_refused() -> None:
    with pytest.raises(InputError, match=r"input\[2\]: the image \(20000000×1 pixels\) is too thin"):
        fetch_size(1, 20_000_000, index=2)


def test_a_long_text_beside_an_image_is_refused_from_its_first_part(monkeypatch) -> None:
    """Image items are never truncated: a 1 MiB text beside an image is refused without tokenising all of it."""
    import io

    from runtime import text as text_module
    from runtime.qwen2vl import gme_item
    from runtime.text import Prompt, TextLayout
    from tests.test_text import _byte_level_tokenizer

    tok = _byte_level_tokenizer()
    seen: list[int] = []
    real = tok.encode_batch

    class Spy:
        def encode_batch(self, texts, **kwargs):
            seen.extend(len(t) for t in texts)
            return real(texts, **kwargs)

    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, "PNG")
    layout = TextLayout(prefix_ids=(), suffix_ids=(1,), max_length=256, pad_id=0, buckets=(256,))
    with pytest.raises(InputError, match=r"input\[4\] has more than 256 tokens, \d+ of them for the image"):
        gme_item(buf.getvalue(), "word " * 200_000, None, None, Spy(), layout, Prompt(), SPEC, 10**8, 4)
    assert seen and max(seen) <= text_module.cut_length(255)  # never the whole megabyte

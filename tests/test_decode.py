"""Image decoding inside Triton's preprocessors under hostile input (issue 22, items 17-18)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from runtime.errors import InputError
from runtime.images import FORMATS, decode_image


def encoded(fmt: str, size: tuple[int, int] = (64, 48), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, (200, 10, 10) if mode == "RGB" else 0).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_formats_clients_send_decode(fmt: str) -> None:
    assert decode_image(encoded(fmt), 10**6).size == (64, 48)


@pytest.mark.parametrize("fmt", ["TIFF", "ICO", "PPM", "TGA", "PCX", "SGI"])
def test_other_pillow_formats_are_not_opened(fmt: str) -> None:
    with pytest.raises(InputError, match=r"input\[5\]: not an image in a supported format \(JPEG, PNG"):
        decode_image(encoded(fmt), 10**6, 5)


def test_any_decoder_failure_is_the_items_own_error(monkeypatch) -> None:
    """A crafted file that makes a decoder raise something other than OSError/ValueError failed the whole batch."""

    from PIL import ImageFile

    data = encoded("PNG")

    def explode(self, *args, **kwargs):
        raise RuntimeError("a decoder bug")

    monkeypatch.setattr(ImageFile.ImageFile, "load", explode)
    with pytest.raises(InputError, match=r"input\[2\]: cannot decode the image \(RuntimeError\)"):
        decode_image(data, 10**6, 2)


def test_a_jpeg_above_the_cap_is_decoded_at_a_reduced_scale() -> None:
    """4000×3000 against a 4 MP cap: the JPEG decoder's 1/2 scale (2000×1500); a PNG of that size is refused."""
    image = decode_image(encoded("JPEG", (4000, 3000)), 4_000_000)
    assert image.size == (2000, 1500) and image.mode == "RGB"
    with pytest.raises(InputError, match="has 4000×3000 pixels; the maximum is 4000000"):
        decode_image(encoded("PNG", (4000, 3000), "1"), 4_000_000)
    with pytest.raises(InputError, match="the maximum is 100"):
        decode_image(encoded("JPEG", (400, 300)), 100)  # not even 1/8 fits: refused


def test_the_pixel_cap_is_read_from_the_header_before_decoding(monkeypatch) -> None:
    from PIL import ImageFile

    bomb = encoded("PNG", (7000, 7000), "1")  # a few KiB that decode to 49 MP
    loads = []
    real = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self, *a, **k: loads.append(1) or real(self, *a, **k))
    assert len(bomb) < 64 * 1024
    with pytest.raises(InputError, match="7000×7000 pixels"):
        decode_image(bomb, 16_777_216)
    assert loads == []

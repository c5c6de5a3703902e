"""The adapter's image loading policy, without a server: data URIs, base64, local paths under the allowed folder."""

from __future__ import annotations

import asyncio
import base64

import pytest

from client.errors import APIError
from client.images import ImageLoader
from client.settings import Settings


def load(settings: Settings, source: str) -> bytes:
    async def run() -> bytes:
        loader = ImageLoader(settings)
        try:
            return await loader.load(source, 3)
        finally:
            await loader.close()

    return asyncio.run(run())


def test_local_paths_only_under_the_allowed_folder(tmp_path) -> None:
    allowed = tmp_path / "images"
    allowed.mkdir()
    (allowed / "cat.png").write_bytes(b"\x89PNG fake")
    (tmp_path / "secret.txt").write_bytes(b"secret")
    settings = Settings(image_local_dir=allowed)
    assert load(settings, str(allowed / "cat.png")) == b"\x89PNG fake"
    assert load(settings, "cat.png") == b"\x89PNG fake"  # relative to the folder
    for escape in (str(tmp_path / "secret.txt"), "../secret.txt"):
        with pytest.raises(APIError, match=r"input\[3\]\.image is neither"):
            load(settings, escape)
    with pytest.raises(APIError, match="is neither"):
        load(Settings(), str(allowed / "cat.png"))  # no folder configured: paths are not read at all


def test_data_uris_and_base64() -> None:
    payload = base64.b64encode(b"abc").decode()
    assert load(Settings(), f"data:image/png;base64,{payload}") == b"abc"
    assert load(Settings(), payload) == b"abc"
    with pytest.raises(APIError, match="only base64 data URIs"):
        load(Settings(), "data:image/png,abc")
    with pytest.raises(APIError, match="unsupported URL scheme 'file'"):
        load(Settings(), "file:///etc/passwd")
    with pytest.raises(APIError, match="has 4 bytes; the maximum is 3"):
        load(Settings(image_max_bytes=3), base64.b64encode(b"abcd").decode())

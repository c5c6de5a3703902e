"""CLIP end to end: both towers through real Triton against Hugging Face CLIPModel."""

from __future__ import annotations

import base64
import gzip
import http.server
import io
import socket
import struct
import time

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from export.build import Progress, export
from export.request import ExportRequest
from tests import tiny
from tests.conftest import target_stack

pytestmark = pytest.mark.e2e
TEXTS = ["a photo of a cat", "a dog", "Ünïcödé 中文 🚀 " * 4, "x"]


def make_images() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    rgba = Image.fromarray(rng.integers(0, 255, (90, 120, 4), dtype=np.uint8), "RGBA")
    gray = Image.fromarray(rng.integers(0, 255, (80, 60), dtype=np.uint8), "L")
    wide = Image.fromarray(rng.integers(0, 255, (40, 300, 3), dtype=np.uint8), "RGB")
    tiny_px = Image.fromarray(rng.integers(0, 255, (1, 1, 3), dtype=np.uint8), "RGB")
    out = {}
    for name, image, fmt in (
        ("alpha.png", rgba, "PNG"),
        ("gray.jpg", gray, "JPEG"),
        ("wide.png", wide, "PNG"),
        ("one.png", tiny_px, "PNG"),
    ):
        buf = io.BytesIO()
        image.save(buf, fmt)
        out[name] = buf.getvalue()
    return out


IMAGES = make_images()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny.clip(tmp_path_factory.mktemp("clip") / "clip-vit-large-patch14-336")


def bomb_png(side: int = 20000) -> bytes:
    """A 1-bit PNG of side × side pixels that compresses to a few kilobytes."""
    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, "PNG")
    return buf.getvalue()


class HostileHandler(http.server.SimpleHTTPRequestHandler):
    """Static files plus the misbehaving endpoints of the hostile corpus."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/loop":
            self._redirect("/loop")
        elif self.path == "/to-private":
            self._redirect("http://10.255.255.1/x.png")  # refused before any connection is made
        elif self.path == "/reset":  # close the connection with a TCP reset before answering
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
        elif self.path == "/gzip":  # 64 KiB that inflate to 64 MiB
            self._send(gzip.compress(b"\0" * (64 * 1024 * 1024)), {"Content-Encoding": "gzip"})
        elif self.path == "/lying":  # declares a gigabyte
            self._send(b"x" * 100, {}, length=10**9)
        elif self.path == "/slow":
            time.sleep(5)
            self.send_response(200)
            self.end_headers()
        else:
            super().do_GET()

    def _send(self, body: bytes, headers: dict[str, str], length: int | None = None) -> None:
        self.send_response(200)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def tiff() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "TIFF")
    return buf.getvalue()


def test_request_bounds_black_box(stack, image_server) -> None:
    """Through the served stack: too many images, a non-JSON body, and the docs and Server header."""
    many = post(stack, [{"image": f"{image_server}/one.png"}] * 65)
    assert many.status_code == 413 and "65 image items; the maximum is 64" in many.json()["error"]["message"]
    form = httpx.post(
        f"{stack.adapter_url}/v1/embeddings", content=b'{"input": "a"}', headers={"Content-Type": "text/plain"}
    )
    assert form.status_code == 415 and "server" not in form.headers


def closed_port() -> int:
    """A loopback port that was free a moment ago and has no listener."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def image_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    for name, data in IMAGES.items():
        (root / name).write_bytes(data)
    (root / "bomb.png").write_bytes(bomb_png())
    (root / "note.txt").write_bytes(b"a text file, served as if it were an image")
    from tests.conftest import file_server

    with file_server(root, HostileHandler) as url:
        yield url


def serve(checkpoint, tmp_path_factory, target: str):
    from launcher.stack import running_stack

    repo = tmp_path_factory.mktemp(f"clip-repo-{target}")
    export(
        ExportRequest(
            checkpoint=checkpoint,
            repository=repo,
            name="clip-vit-large-patch14-336",
            hf_id="openai/clip-vit-large-patch14-336",
            target=target,
        ),
        Progress(),
    )
    with running_stack(
        repo,
        tmp_path_factory.mktemp(f"clip-stack-{target}"),
        "--image-allowed-hosts",
        "127.0.0.1",
        "--image-timeout-s",
        "2",
        "--image-max-bytes",
        "1000000",
    ) as s:
        yield s


stack = target_stack(serve, "checkpoint", "local")
torch_stack = target_stack(serve, "checkpoint", "torch")


@pytest.fixture(scope="module")
def reference(checkpoint):
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(str(checkpoint)).eval()
    tok = AutoTokenizer.from_pretrained(str(checkpoint))
    proc = AutoImageProcessor.from_pretrained(str(checkpoint))

    def features(out) -> torch.Tensor:
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def text(texts: list[str]) -> np.ndarray:
        batch = tok(texts, padding=True, truncation=True, max_length=77, return_tensors="pt")
        with torch.inference_mode():
            emb = features(
                model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            )
        return torch.nn.functional.normalize(emb, dim=-1).numpy()

    def image(blobs: list[bytes]) -> np.ndarray:
        pixels = proc([Image.open(io.BytesIO(b)).convert("RGB") for b in blobs], return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            emb = features(model.get_image_features(pixel_values=pixels))
        return torch.nn.functional.normalize(emb, dim=-1).numpy()

    return text, image, proc


def post(stack, items, **fields) -> httpx.Response:
    return httpx.post(
        f"{stack.adapter_url}/v1/embeddings",
        json={"model": "clip-vit-large-patch14-336", "input": items, **fields},
        timeout=60,
    )


def vectors(r: httpx.Response) -> np.ndarray:
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [d["index"] for d in data] == list(range(len(data)))
    return np.array([d["embedding"] for d in data], dtype=np.float32)


def data_uri(name: str) -> str:
    kind = "jpeg" if name.endswith(".jpg") else "png"
    return f"data:image/{kind};base64,{base64.b64encode(IMAGES[name]).decode()}"


def assert_close(served: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)
    cos = (served * expected).sum(axis=1)
    assert cos.min() >= 0.99999, cos


def test_pixels_match_the_hugging_face_processor(reference) -> None:
    from runtime.images import ClipImageSpec, clip_pixels, decode_image

    _, _, proc = reference
    spec = ClipImageSpec(56, 56, 56, tuple(proc.image_mean), tuple(proc.image_std))
    for data in IMAGES.values():
        ours = clip_pixels(decode_image(data, 10**8), spec)
        theirs = proc([Image.open(io.BytesIO(data)).convert("RGB")], return_tensors="np")["pixel_values"][0]
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_text_tower_matches_clip_and_rows_do_not_see_each_other(served, reference) -> None:
    stack = served
    text, _, _ = reference
    served = vectors(post(stack, TEXTS))
    assert served.shape == (4, 16)
    assert_close(served, text(TEXTS))
    for i, t in enumerate(TEXTS):  # each text alone equals its row in the padded batch
        assert float(vectors(post(stack, t))[0] @ served[i]) >= 0.999999


def test_image_tower_matches_clip_for_every_source_form(served, reference, image_server) -> None:
    stack = served
    _, image, _ = reference
    names = list(IMAGES)
    expected = image([IMAGES[n] for n in names])
    assert_close(vectors(post(stack, [{"image": data_uri(n)} for n in names])), expected)
    assert_close(vectors(post(stack, [{"image": base64.b64encode(IMAGES[n]).decode()} for n in names])), expected)
    assert_close(vectors(post(stack, [{"image": f"{image_server}/{n}"} for n in names])), expected)


def test_mixed_list_keeps_input_order_and_cross_modal_similarity(served, reference) -> None:
    stack = served
    text, image, _ = reference
    items = [TEXTS[0], {"image": data_uri("alpha.png")}, {"text": TEXTS[1]}, {"image": data_uri("gray.jpg")}]
    r = post(stack, items)
    served = vectors(r)
    t, i = text(TEXTS[:2]), image([IMAGES["alpha.png"], IMAGES["gray.jpg"]])
    assert_close(served[[0, 2]], t)
    assert_close(served[[1, 3]], i)
    np.testing.assert_allclose(served[[0, 2]] @ served[[1, 3]].T, t @ i.T, atol=1e-5)
    assert r.json()["usage"]["prompt_tokens"] > 0


def test_fused_item_and_bad_images_are_400_and_the_server_keeps_serving(stack, image_server) -> None:
    r = post(stack, [{"text": "a cat", "image": data_uri("alpha.png")}])
    assert r.status_code == 400 and "does not fuse" in r.json()["error"]["message"]
    cases = {
        "not an image": base64.b64encode(b"hello, not an image").decode(),
        "truncated": base64.b64encode(IMAGES["alpha.png"][:40]).decode(),
        "missing": f"{image_server}/nope.png",
        "scheme": "ftp://example.com/x.png",
    }
    for what, source in cases.items():
        r = post(stack, ["fine", {"image": source}])
        assert r.status_code == 400, (what, r.text)
        assert r.json()["error"]["message"].startswith("input[1]"), (what, r.json())
    assert vectors(post(stack, [{"image": data_uri("wide.png")}])).shape == (1, 16)


def test_models_list_both_modalities(stack) -> None:
    data = httpx.get(f"{stack.adapter_url}/v1/models").json()["data"]
    assert [(m["id"], m["hf_id"], m["modalities"], m["max_tokens"]) for m in data] == [
        ("clip-vit-large-patch14-336", "openai/clip-vit-large-patch14-336", ["text", "image"], 77)
    ]


def test_text_only_model_refuses_images(minilm_stack) -> None:
    r = httpx.post(f"{minilm_stack.adapter_url}/v1/embeddings", json={"input": [{"image": data_uri("one.png")}]})
    assert r.status_code == 400 and "embeds text only" in r.json()["error"]["message"]


def test_private_addresses_are_refused_unless_allowed(image_server) -> None:
    import asyncio

    from client.errors import APIError
    from client.images import ImageLoader
    from client.settings import Settings

    async def load(settings: Settings) -> bytes:
        loader = ImageLoader(settings)
        try:
            return await loader.load(f"{image_server}/one.png", 0)
        finally:
            await loader.close()

    with pytest.raises(APIError, match="could not be fetched"):
        asyncio.run(load(Settings()))
    assert asyncio.run(load(Settings(image_allowed_hosts="127.0.0.1"))) == IMAGES["one.png"]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("bomb", "pixels; the maximum is"),
        ("truncated", "cannot decode the image"),
        ("zero bytes", "is empty"),
        ("not an image", "not an image in a supported format"),
        ("too many bytes", "the maximum is 1000000"),
        ("redirect loop", "could not be fetched"),
        ("redirect to a private address", "could not be fetched"),
        ("slow server", "could not be fetched"),
        ("bad base64", "neither an http(s) URL"),
        ("closed port", "could not be fetched"),  # was a 500
        ("connection reset", "could not be fetched"),
        ("URL to a non-image", "not an image in a supported format"),
        ("gzip bomb", "could not be fetched"),
        ("lying length", "is larger than 1000000 bytes"),
        ("loopback host not allowed", "could not be fetched"),
        ("tiff", "not an image in a supported format (JPEG, PNG, WEBP, GIF, BMP)"),
    ],
)
def test_hostile_images_get_their_400_and_the_next_request_is_served(stack, image_server, case, expected) -> None:
    sources = {
        "bomb": f"{image_server}/bomb.png",
        "truncated": "data:image/png;base64," + base64.b64encode(IMAGES["alpha.png"][:60]).decode(),
        "zero bytes": "data:image/png;base64,",
        "not an image": base64.b64encode(b"GIF89a? no, just text").decode(),
        "too many bytes": "data:image/png;base64," + base64.b64encode(b"\0" * 1_000_001).decode(),
        "redirect loop": f"{image_server}/loop",
        "redirect to a private address": f"{image_server}/to-private",
        "slow server": f"{image_server}/slow",
        "bad base64": "not base64 at all!",
        "closed port": f"http://127.0.0.1:{closed_port()}/x.png",
        "connection reset": f"{image_server}/reset",
        "URL to a non-image": f"{image_server}/note.txt",
        "gzip bomb": f"{image_server}/gzip",
        "lying length": f"{image_server}/lying",
        # 127.0.0.2 is loopback too, and only 127.0.0.1 is allowed: a black-box check that stays on this machine
        "loopback host not allowed": image_server.replace("127.0.0.1", "127.0.0.2") + "/one.png",
        "tiff": "data:image/tiff;base64," + base64.b64encode(tiff()).decode(),
    }
    r = post(stack, ["fine", {"text": "also fine"}, {"image": sources[case]}])
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["message"].startswith("input[2]") and expected in error["message"], error
    assert vectors(post(stack, [{"image": data_uri("alpha.png")}, "next"])).shape == (2, 16)


def test_a_one_pixel_image_is_valid_for_clip(stack) -> None:
    """1×1 is a real image: resized to the tower's size like any other, not an error."""
    assert vectors(post(stack, [{"image": data_uri("one.png")}])).shape == (1, 16)


def test_tokenize_ids_round_trip(stack) -> None:
    from tests.conftest import assert_token_ids_round_trip

    assert_token_ids_round_trip(stack.adapter_url, "clip-vit-large-patch14-336", "a photo of a cat")


def test_cohere_v2_embeds_images_given_as_data_uris(stack) -> None:
    """`cohere.ClientV2.embed(images=[data URI], input_type="image")`: the image item's own vector."""
    import cohere

    uris = [data_uri("alpha.png"), data_uri("gray.jpg")]
    expected = vectors(post(stack, [{"image": u} for u in uris]))
    client = cohere.ClientV2(base_url=stack.adapter_url, api_key="unused")
    got = client.embed(model="clip-vit-large-patch14-336", images=uris, input_type="image", embedding_types=["float"])
    np.testing.assert_allclose(np.array(got.embeddings.float_), expected, atol=1e-6)
    assert got.meta.billed_units.images == 2

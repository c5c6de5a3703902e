"""GME end to end: text, image and fused items through real Triton against the authors' recipe (gme_inference.py)."""

from __future__ import annotations

import base64
import io

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
MIN_PIXELS, MAX_PIXELS = 4 * 28 * 28, 16 * 28 * 28  # small bounds keep the tiny model fast; the default is 256…1280·28²
DEFAULT = "You are a helpful assistant."


def encoded(array: np.ndarray, mode: str, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, fmt)
    return buf.getvalue()


RNG = np.random.default_rng(0)
IMAGES = {
    "photo.png": encoded(RNG.integers(0, 255, (100, 150, 3), dtype=np.uint8), "RGB", "PNG"),
    "alpha.png": encoded(RNG.integers(0, 255, (90, 60, 4), dtype=np.uint8), "RGBA", "PNG"),
    "gray.jpg": encoded(RNG.integers(0, 255, (80, 120), dtype=np.uint8), "L", "JPEG"),
    "wide.png": encoded(RNG.integers(0, 255, (30, 400, 3), dtype=np.uint8), "RGB", "PNG"),
    "tall.png": encoded(RNG.integers(0, 255, (500, 90, 3), dtype=np.uint8), "RGB", "PNG"),
    # outside this export's bounds (4·28² … 16·28² pixels) and at extreme aspect ratios
    "thumb.png": encoded(RNG.integers(0, 255, (30, 20, 3), dtype=np.uint8), "RGB", "PNG"),
    "large.jpg": encoded(RNG.integers(0, 255, (700, 900, 3), dtype=np.uint8), "RGB", "JPEG"),
    "odd.png": encoded(RNG.integers(0, 255, (117, 333, 3), dtype=np.uint8), "RGB", "PNG"),
    "sliver.png": encoded(RNG.integers(0, 255, (2, 600, 3), dtype=np.uint8), "RGB", "PNG"),  # ratio 300
    "thread.png": encoded(RNG.integers(0, 255, (6000, 1, 3), dtype=np.uint8), "RGB", "PNG"),  # clamped to 200
}


def uri(name: str) -> str:
    return f"data:image/png;base64,{base64.b64encode(IMAGES[name]).decode()}"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny.qwen2_vl(tmp_path_factory.mktemp("gme") / "gme-Qwen2-VL-2B-Instruct", MIN_PIXELS, MAX_PIXELS)


def serve(checkpoint, tmp_path_factory, target: str):
    from launcher.stack import running_stack

    repo = tmp_path_factory.mktemp(f"gme-repo-{target}")
    export(
        ExportRequest(
            checkpoint=checkpoint,
            repository=repo,
            name="gme-Qwen2-VL-2B-Instruct",
            hf_id="Alibaba-NLP/gme-Qwen2-VL-2B-Instruct",
            aliases=("gme-qwen2-vl",),
            min_pixels=MIN_PIXELS,
            max_pixels=MAX_PIXELS,
            target=target,
        ),
        Progress(),
    )
    workdir = tmp_path_factory.mktemp(f"gme-stack-{target}")
    with running_stack(repo, workdir, "--image-allowed-hosts", "127.0.0.1") as s:
        yield s


stack = target_stack(serve, "checkpoint", "local")
torch_stack = target_stack(serve, "checkpoint", "torch")


@pytest.fixture(scope="module")
def reference(checkpoint):
    """The authors' recipe: fetch_image then the processor, chat template, image pads expanded, features
    scattered, base model without position ids, last token of the right-padded batch, L2."""
    from transformers import AutoTokenizer, Qwen2VLForConditionalGeneration

    from tests.gme_reference import fetch_image
    from tests.gme_reference import processor as make_processor

    model = Qwen2VLForConditionalGeneration.from_pretrained(str(checkpoint)).eval()
    tok = AutoTokenizer.from_pretrained(str(checkpoint))
    processor = make_processor(MIN_PIXELS, MAX_PIXELS)

    def embed(items: list[tuple[str | None, bytes | None]], instruction: str = DEFAULT) -> tuple[np.ndarray, list[int]]:
        prompts, pixels, grids = [], [], []
        for text, image in items:
            mark = ""
            if image is not None:
                out = processor([fetch_image(Image.open(io.BytesIO(image)))], return_tensors="pt")
                pixels.append(out["pixel_values"])
                grids.append(out["image_grid_thw"])
                pads = int(out["image_grid_thw"].prod()) // 4
                mark = "<|vision_start|>" + "<|image_pad|>" * pads + "<|vision_end|>"
            prompts.append(
                f"<|im_start|>system\n{instruction}<|im_end|>\n<|im_start|>user\n{mark}{text or ''}"
                "<|im_end|>\n<|im_start|>assistant\n<|endoftext|>"
            )
        batch = tok(prompts, padding=True, return_tensors="pt")
        ids, mask = batch["input_ids"], batch["attention_mask"]
        with torch.inference_mode():
            embeds = model.model.get_input_embeddings()(ids)
            if pixels:
                feats = model.model.get_image_features(
                    torch.cat(pixels), torch.cat(grids), return_dict=True
                ).pooler_output
                feats = torch.cat(list(feats)) if isinstance(feats, list | tuple) else feats
                slots = (ids == model.config.image_token_id).unsqueeze(-1).expand_as(embeds)
                embeds = embeds.masked_scatter(slots, feats)
            hidden = model.model(input_ids=None, inputs_embeds=embeds, attention_mask=mask).last_hidden_state
            pooled = hidden[torch.arange(len(prompts)), mask.sum(1) - 1]
        return torch.nn.functional.normalize(pooled, dim=-1).numpy(), mask.sum(1).tolist()

    return embed


@pytest.fixture(scope="module")
def image_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("gme-images")
    for name, data in IMAGES.items():
        (root / name).write_bytes(data)
    from tests.conftest import file_server

    with file_server(root) as url:
        yield url


def post(stack, items, model="gme-qwen2-vl", **fields) -> httpx.Response:
    return httpx.post(
        f"{stack.adapter_url}/v1/embeddings", json={"model": model, "input": items, **fields}, timeout=120
    )


def vectors(r: httpx.Response) -> np.ndarray:
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [d["index"] for d in data] == list(range(len(data)))
    return np.array([d["embedding"] for d in data], dtype=np.float32)


def assert_close(served: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)
    cos = (served * expected).sum(axis=1)
    assert cos.min() >= 0.9999, cos


def test_text_image_and_fused_items_match_the_authors_recipe(served, reference) -> None:
    stack = served
    items = [
        ("Represent this image in embedding space.", None),
        (None, IMAGES["photo.png"]),
        ("a photo of noise", IMAGES["photo.png"]),
        ("plain text", None),
    ]
    body = [
        {"text": items[0][0]},
        {"image": uri("photo.png")},
        {"text": items[2][0], "image": uri("photo.png")},
        "plain text",
    ]
    r = post(stack, body)
    expected, lengths = reference(items)
    assert_close(vectors(r), expected)
    assert r.json()["usage"]["prompt_tokens"] == sum(lengths)  # image pads included


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_image_sizes_modes_and_formats(served, reference, name) -> None:
    stack = served
    r = post(stack, [{"image": uri(name)}])
    expected, lengths = reference([(None, IMAGES[name])])
    assert_close(vectors(r), expected)
    assert r.json()["usage"]["prompt_tokens"] == sum(lengths)  # the image-token count of the authors' recipe


def test_queries_take_the_instruction(served, reference) -> None:
    stack = served
    task = "Find an image that matches the given text."
    served = vectors(
        post(stack, ["a cat", {"image": uri("photo.png"), "text": "a cat"}], input_type="query", instruction=task)
    )
    assert_close(served, reference([("a cat", None), ("a cat", IMAGES["photo.png"])], instruction=task)[0])
    plain = vectors(post(stack, ["a cat"]))
    assert float(plain[0] @ served[0]) < 0.9999  # the instruction changes the embedding


def test_the_seed_request_body(stack, image_server) -> None:
    """SGLang's documented example, unchanged but for the image URL (a local server here)."""
    payload = {
        "model": "gme-qwen2-vl",
        "input": [{"text": "Represent this image in embedding space."}, {"image": f"{image_server}/photo.png"}],
    }
    response = httpx.post(f"{stack.adapter_url}/v1/embeddings", json=payload, timeout=120).json()
    embeddings = [x.get("embedding") for x in response.get("data", [])]
    assert len(embeddings) == 2 and all(len(e) == 64 for e in embeddings)
    assert vectors(post(stack, ["x"], model="Alibaba-NLP/gme-Qwen2-VL-2B-Instruct")).shape == (1, 64)


def test_bad_images_are_400_for_their_item_only(stack) -> None:
    r = post(stack, ["fine", {"image": base64.b64encode(b"not an image").decode()}])
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("input[1]")
    assert vectors(post(stack, [{"image": uri("wide.png")}, "next"])).shape == (2, 64)


def test_overlong_image_items_are_refused_and_texts_truncated(stack) -> None:
    long_text = " ".join(f"word{i}" for i in range(3000))
    r = post(stack, [{"image": uri("photo.png"), "text": long_text}])
    assert r.status_code == 400 and "image items are never truncated" in r.json()["error"]["message"]
    r = post(stack, [long_text])
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == 1800


STAND_IN_ENGINE = '''"""Stand-in for a native ONNX Runtime engine model: runs each request's tensors as they are."""
import json
from pathlib import Path

import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def execute(self, requests):
        responses = []
        for r in requests:
            feed = {n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs}
            values = self.session.run(self.outputs, feed)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(n, v) for n, v in zip(self.outputs, values)]))
        return responses
'''


def test_native_target_puts_engines_behind_batching_hosts(checkpoint, reference, tmp_path_factory) -> None:
    """`--target onnxruntime`: the LM and the vision tower become `max_batch_size: 0` engine models that
    GME's Python hosts call through BLS with the ragged batches they pack. The bundled tritonserver has
    no ONNX Runtime backend, so each engine is served here by a Python stand-in running the same file
    as that backend would; everything else (hosts, BLS calls, configs, ensembles) is the real thing."""
    from google.protobuf import json_format

    from export.repository import parse_config, write_config
    from launcher.stack import running_stack

    repo = tmp_path_factory.mktemp("gme-native-repo")
    name = "gme-native"
    export(
        ExportRequest(
            checkpoint=checkpoint,
            repository=repo,
            name=name,
            target="onnxruntime",
            min_pixels=MIN_PIXELS,
            max_pixels=MAX_PIXELS,
        ),
        Progress(),
    )
    for tower, graph_inputs in (("encoder", ["input_ids", "attention_mask", "image_embeds"]), ("vision", None)):
        engine = parse_config(repo / f"{name}_{tower}_engine" / "config.pbtxt")
        assert (engine.backend, engine.max_batch_size) == ("onnxruntime", 0)
        assert (repo / f"{name}_{tower}_engine" / "1" / "model.onnx").exists()
        if graph_inputs:
            assert [i.name for i in engine.input] == graph_inputs
        host = json_format.MessageToDict(parse_config(repo / f"{name}_{tower}" / "config.pbtxt"))
        assert host["backend"] == "python"
        assert host["parameters"]["engine_model"]["stringValue"] == f"{name}_{tower}_engine"
        assert not (repo / f"{name}_{tower}" / "1" / "model.onnx").exists()
        engine.backend, engine.default_model_filename = "python", ""
        write_config(repo / f"{name}_{tower}_engine", engine)
        (repo / f"{name}_{tower}_engine" / "1" / "model.py").write_text(STAND_IN_ENGINE)

    with running_stack(repo, tmp_path_factory.mktemp("gme-native-stack")) as s:
        items = [("a caption", None), (None, IMAGES["photo.png"]), ("fused", IMAGES["wide.png"]), ("more", None)]
        body = [{"text": "a caption"}, {"image": uri("photo.png")}, {"text": "fused", "image": uri("wide.png")}, "more"]
        r = post(s, body, model=name)
        expected, lengths = reference(items)
        assert_close(vectors(r), expected)
        assert r.json()["usage"]["prompt_tokens"] == sum(lengths)


def test_tokenize_ids_round_trip(stack) -> None:
    from tests.conftest import assert_token_ids_round_trip

    assert_token_ids_round_trip(stack.adapter_url, "gme-qwen2-vl", "a photo of a cat")
    assert_token_ids_round_trip(stack.adapter_url, "gme-qwen2-vl", "a cat", input_type="query")
    assert_token_ids_round_trip(
        stack.adapter_url, "gme-qwen2-vl", "a cat", input_type="query", instruction="Find an image of it."
    )

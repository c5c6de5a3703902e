"""The default model end to end: real tritonserver, real adapter, real weights, parity with sentence-transformers."""

from __future__ import annotations

import base64
import random
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from openai import OpenAI

from launcher import default_model

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent


def sentences() -> list[str]:
    """60 varied inputs: short, long beyond 256 tokens, non-ASCII, emoji, code, whitespace."""
    fixed = [
        "a cat",
        "a kitten",
        "A man is eating food.",
        "The new movie is awesome!",
        "Triton Inference Server batches requests dynamically.",
        "¿Dónde está la biblioteca?",
        "Ich habe heute keine Zeit.",
        "これは日本語の文です。",
        "这是一个中文句子。",
        "Это предложение на русском языке.",
        "🚀🔥 emoji only 😀😃😄",
        "naïve café résumé façade",
        "def f(x):\n    return x ** 2",
        "SELECT * FROM t WHERE id = 42;",
        "   leading and trailing spaces   ",
        "tabs\tand\nnewlines",
        "UPPER CASE SHOUTING",
        "1234567890",
        "a" * 300,
        "http://example.com/path?query=1&b=2",
    ]
    rng = random.Random(7)
    vocab = (
        "the of and to in is was for on that with as by at from it an be this are or which one have had not but".split()
    )
    vocab += ["embedding", "server", "vector", "latency", "throughput", "naïve", "Zürich", "東京", "🙂"]
    generated = [" ".join(rng.choice(vocab) for _ in range(rng.randint(3, 40))) for _ in range(30)]
    long = [" ".join(rng.choice(vocab) for _ in range(n)) for n in (300, 500, 1200)]
    unicode_long = "Grüße aus Köln, 你好世界, مرحبا بالعالم. " * 40
    return fixed + generated + long + [unicode_long]


@pytest.fixture(scope="module")
def reference():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(default_model.checkpoint()), device="cpu")


@pytest.fixture(scope="module")
def stack(minilm_stack):
    return minilm_stack


@pytest.fixture(scope="module")
def torch_stack(tmp_path_factory):
    """The embedded model on the `torch` target: its sentence-transformers graph in PyTorch, in Triton."""
    from export.build import Progress, export
    from export.request import ExportRequest
    from launcher.stack import running_stack

    repo = tmp_path_factory.mktemp("minilm-torch-repo")
    name, checkpoint = default_model.NAME, default_model.checkpoint()
    export(ExportRequest(checkpoint, repo, name, hf_id=default_model.HF_ID, target="torch"), Progress())
    with running_stack(repo, tmp_path_factory.mktemp("minilm-torch-stack")) as s:
        yield s


@pytest.fixture(scope="module")
def openai_client(minilm_stack) -> OpenAI:
    return OpenAI(base_url=f"{minilm_stack.adapter_url}/v1", api_key="unused", max_retries=0)


def post(stack, body, **kw) -> httpx.Response:
    return httpx.post(f"{stack.adapter_url}/v1/embeddings", json=body, timeout=60, **kw)


def test_parity_with_sentence_transformers(served, reference) -> None:
    texts = sentences()
    assert len(texts) >= 50
    r = post(served, {"model": "all-MiniLM-L6-v2", "input": texts})
    assert r.status_code == 200, r.text
    body = r.json()
    served = np.array([d["embedding"] for d in sorted(body["data"], key=lambda d: d["index"])], dtype=np.float32)
    assert [d["index"] for d in body["data"]] == list(range(len(texts)))
    expected = reference.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    assert served.shape == (len(texts), 384)
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)
    cosines = (served * expected).sum(axis=1) / np.linalg.norm(expected, axis=1)
    assert cosines.min() >= 0.99999, [(t[:30], c) for t, c in zip(texts, cosines, strict=True) if c < 0.99999]
    tokens = sum(min(len(reference.tokenizer(t)["input_ids"]), 256) for t in texts)
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    assert body["model"] == "all-MiniLM-L6-v2"


def test_a_batch_row_equals_the_same_input_alone(served) -> None:
    texts = ["short", "a somewhat longer sentence about Triton and batching " * 3, "中文 and emoji 🚀"]
    batch = post(served, {"input": texts}).json()["data"]
    for i, text in enumerate(texts):
        alone = post(served, {"input": text}).json()["data"][0]["embedding"]
        assert np.dot(alone, batch[i]["embedding"]) >= 0.999999


def test_openai_sdk_base64_default_and_float(openai_client, reference) -> None:
    texts = ["a cat", "a kitten", "a dog"]
    default = openai_client.embeddings.create(model="all-MiniLM-L6-v2", input=texts)  # the SDK asks for base64
    floats = openai_client.embeddings.create(
        model="sentence-transformers/all-MiniLM-L6-v2", input=texts, encoding_format="float"
    )
    a = np.array([d.embedding for d in default.data])
    b = np.array([d.embedding for d in floats.data])
    assert a.shape == (3, 384)
    np.testing.assert_allclose(a, b, atol=1e-7)
    np.testing.assert_allclose(a, reference.encode(texts, normalize_embeddings=True), atol=1e-5)
    assert floats.model == "all-MiniLM-L6-v2"  # the canonical id, whatever name the request used
    assert default.usage.prompt_tokens == 12
    single = openai_client.embeddings.create(model="minilm", input="a cat")
    assert len(single.data) == 1 and np.allclose(single.data[0].embedding, a[0], atol=1e-7)


def test_curl_form_from_the_readme(minilm_stack) -> None:
    """The README's curl sends a JSON content type; `curl -d` alone sends form encoding, which is a 415
    that says what to add (a cross-site form or text/plain POST needs no CORS preflight)."""
    body = b'{"model":"all-MiniLM-L6-v2","input":["a cat","a kitten"]}'
    for media in ("application/x-www-form-urlencoded", "text/plain", None):
        refused = httpx.post(
            f"{minilm_stack.adapter_url}/v1/embeddings",
            content=body,
            headers={"Content-Type": media} if media else {},
            timeout=30,
        )
        assert refused.status_code == 415, refused.text
        assert "-H 'Content-Type: application/json'" in refused.json()["error"]["message"]
    r = httpx.post(
        f"{minilm_stack.adapter_url}/v1/embeddings",
        content=body,
        headers={"Content-Type": "application/json; charset=utf-8"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    vectors = np.array([d["embedding"] for d in r.json()["data"]])
    assert vectors.shape == (2, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_models_and_health(minilm_stack) -> None:
    models = httpx.get(f"{minilm_stack.adapter_url}/v1/models").json()
    ranges = models["data"][0].pop("int8_ranges")  # calibrated at export: minimums, then maximums
    assert len(ranges) == 2 and len(ranges[0]) == len(ranges[1]) == 384
    assert all(lo < hi for lo, hi in zip(*ranges, strict=True))
    assert models["data"] == [
        {
            "id": "all-MiniLM-L6-v2",
            "object": "model",
            "created": 0,
            "owned_by": "triton",
            "hf_id": "sentence-transformers/all-MiniLM-L6-v2",
            "aliases": ["minilm"],
            "dimension": 384,
            "matryoshka_dimensions": [],
            "matryoshka_min_dimension": None,
            "max_tokens": 256,
            "modalities": ["text"],
            "query_template": False,
            "task": "embed",
            "tasks": ["embed"],
            "engine": "local float32",  # the fixture's export names its target; `auto` adds its candidates
            "engine_candidates": [],
        }
    ]
    assert httpx.get(f"{minilm_stack.adapter_url}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{minilm_stack.adapter_url}/health/ready")
    assert ready.status_code == 200 and ready.json()["models"] == ["all-MiniLM-L6-v2"]


def assert_error(r: httpx.Response, status: int, param: str | None = None, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": []}, "input"),
        ({"input": ""}, "input"),
        ({"input": ["ok", "   "]}, "input"),
        ({"input": 5}, "input"),
        ({"input": ["ok", 3]}, "input"),
        ({"model": 7, "input": "x"}, None),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "x", "dimensions": 128}, "dimensions"),
        ({}, "input"),
    ],
)
def test_bad_requests_are_400_in_the_openai_envelope(minilm_stack, body, param) -> None:
    assert_error(post(minilm_stack, body), 400, param)


def test_malformed_json_is_400(minilm_stack) -> None:
    r = httpx.post(
        f"{minilm_stack.adapter_url}/v1/embeddings",
        content=b'{"input": ',
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert "not valid JSON" in assert_error(r, 400)["message"]


def test_unknown_model_is_404(minilm_stack) -> None:
    error = assert_error(post(minilm_stack, {"model": "no-such-model", "input": "x"}), 404, "model", "model_not_found")
    assert "no-such-model" in error["message"]


def test_overlong_input_with_truncate_none_is_400_and_the_server_keeps_serving(minilm_stack) -> None:
    texts = ["fine", "word " * 600]
    error = assert_error(post(minilm_stack, {"input": texts, "truncate": "NONE"}), 400, "input")
    assert "input[1] has 602 tokens; the maximum is 256" in error["message"]
    r = post(minilm_stack, {"input": texts})
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == 3 + 256


def test_error_index_counts_across_chunks(minilm_stack) -> None:
    """Inputs beyond the engine's max batch go in several Triton calls; error indices stay global."""
    texts = ["ok"] * 70 + ["word " * 600]
    error = assert_error(post(minilm_stack, {"input": texts, "truncate": "NONE"}), 400, "input")
    assert "input[70]" in error["message"]
    r = post(minilm_stack, {"input": [f"text number {i}" for i in range(150)]})
    assert [d["index"] for d in r.json()["data"]] == list(range(150))


def test_triton_unreachable_is_503(minilm_stack, tmp_path) -> None:
    from launcher.processes import free_port, start_adapter, stop, wait_http

    port = free_port()
    adapter = start_adapter(port, f"127.0.0.1:{free_port()}", tmp_path / "adapter.log", "--connect-timeout-s", "1")
    try:
        wait_http(f"http://127.0.0.1:{port}/docs", adapter, timeout=60)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/embeddings", json={"input": "x"}, timeout=30)
        assert_error(r, 503)
        assert httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=30).status_code == 503
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=30).status_code == 200  # alive, not ready
    finally:
        stop(adapter)


def test_tritonclient_example(minilm_stack) -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "client" / "examples" / "tritonclient_embed.py"),
            "--url",
            minilm_stack.grpc_url,
            "a cat",
            "a kitten",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert out.count("384 dims, norm 1.000000") == 2


def test_the_load_can_come_from_several_processes(minilm_stack) -> None:
    """bench.request_rate's load generator: shares of the requests from separate processes, merged, with
    the generators' own CPU per request (one aiohttp loop cannot keep eight adapter workers busy)."""
    from bench import runners

    queries = [f"query {i}" for i in range(40)]
    result, client_ms = runners.served_by(2, minilm_stack.adapter_url, default_model.NAME, queries, 1, 4, "two")
    assert (result.items, len(result.latencies)) == (40, 40) and result.seconds > 0
    assert result.tokens > 0 and client_ms > 0


HELD_OUT = (Path(__file__).parent / "held_out_texts.txt").read_text().splitlines()


@pytest.mark.parametrize("kind", ["int8", "uint8", "binary", "ubinary"])
def test_compressed_embeddings_are_sentence_transformers_quantize_embeddings(minilm_stack, kind) -> None:
    """`embedding_type` on /v1/embeddings: bit for bit (binary, ubinary) and value for value (int8, uint8 with
    the card's calibration) what `quantize_embeddings` makes of the float vectors."""
    from sentence_transformers.quantization import quantize_embeddings

    url = f"{minilm_stack.adapter_url}/v1/embeddings"
    texts = HELD_OUT[:64]
    floats = np.array([d["embedding"] for d in httpx.post(url, json={"input": texts}, timeout=60).json()["data"]])
    got = httpx.post(url, json={"input": texts, "embedding_type": kind}, timeout=60).json()["data"]
    card = httpx.get(f"{minilm_stack.adapter_url}/v1/models").json()["data"][0]
    ranges = np.array(card["int8_ranges"], dtype=np.float32) if kind.endswith("int8") else None
    expected = quantize_embeddings(floats.astype(np.float32), precision=kind, ranges=ranges)
    np.testing.assert_array_equal(np.array([d["embedding"] for d in got]), expected)
    packed = httpx.post(url, json={"input": texts[:2], "embedding_type": kind, "encoding_format": "base64"}).json()
    raw = base64.b64decode(packed["data"][0]["embedding"])
    assert np.frombuffer(raw, dtype=expected.dtype).tolist() == expected[0].tolist()


def test_int8_keeps_the_cosine_to_float_on_held_out_texts(minilm_stack) -> None:
    """The calibration texts and these are disjoint; the README quotes the figures this prints."""
    url = f"{minilm_stack.adapter_url}/v1/embeddings"
    texts = HELD_OUT
    floats = np.array([d["embedding"] for d in httpx.post(url, json={"input": texts}, timeout=120).json()["data"]])
    card = httpx.get(f"{minilm_stack.adapter_url}/v1/models").json()["data"][0]
    ranges = np.array(card["int8_ranges"], dtype=np.float64)
    steps = (ranges[1] - ranges[0]) / 255
    for kind, offset in (("int8", 128), ("uint8", 0)):
        got = httpx.post(url, json={"input": texts, "embedding_type": kind}, timeout=120).json()["data"]
        restored = (np.array([d["embedding"] for d in got], dtype=np.float64) + offset) * steps + ranges[0]
        cosine = (restored * floats).sum(axis=1) / np.linalg.norm(restored, axis=1) / np.linalg.norm(floats, axis=1)
        print(f"{kind}: {len(texts)} held-out texts, cosine to float mean {cosine.mean():.5f}, min {cosine.min():.5f}")
        assert cosine.min() > 0.99


def test_int8_is_refused_at_a_reduced_size_and_binary_is_not(minilm_stack) -> None:
    url = f"{minilm_stack.adapter_url}/v1/embeddings"
    assert httpx.post(url, json={"input": "a", "embedding_type": "int8", "dimensions": 384}).status_code == 200
    refused = httpx.post(url, json={"input": "a", "embedding_type": "bogus"})
    assert refused.status_code == 400 and "embedding_type" in refused.json()["error"]["message"]


def test_vllm_score_on_an_embedding_model_is_the_cosine_of_its_embeddings(minilm_stack) -> None:
    url = minilm_stack.adapter_url
    texts = ["how are embeddings served?", "Triton serves the encoder.", "bread"]
    vectors = np.array(
        [d["embedding"] for d in httpx.post(f"{url}/v1/embeddings", json={"input": texts}).json()["data"]]
    )
    got = httpx.post(f"{url}/v1/score", json={"text_1": texts[0], "text_2": texts[1:]}, timeout=60).json()
    np.testing.assert_allclose([d["score"] for d in got["data"]], vectors[1:] @ vectors[0], atol=1e-6)


def test_cohere_sdk_v2_embed_gets_every_type_from_one_request(minilm_stack) -> None:
    """`cohere.ClientV2(base_url=…).embed`, unchanged: float, base64, and the compressed types as
    `quantize_embeddings` makes them with the card's calibration."""
    import cohere
    from sentence_transformers.quantization import quantize_embeddings

    url = minilm_stack.adapter_url
    texts = HELD_OUT[:8]
    floats = np.array(
        [d["embedding"] for d in httpx.post(f"{url}/v1/embeddings", json={"input": texts}).json()["data"]]
    )
    client = cohere.ClientV2(base_url=url, api_key="unused")
    kinds = ["float", "int8", "uint8", "binary", "ubinary", "base64"]
    got = client.embed(model=default_model.NAME, texts=texts, input_type="search_document", embedding_types=kinds)
    np.testing.assert_allclose(np.array(got.embeddings.float_), floats, atol=1e-6)
    decoded = np.array([np.frombuffer(base64.b64decode(row), dtype="<f4") for row in got.embeddings.base64])
    np.testing.assert_allclose(decoded, floats, atol=1e-6)
    ranges = np.array(httpx.get(f"{url}/v1/models").json()["data"][0]["int8_ranges"], dtype=np.float32)
    for kind in ("int8", "uint8", "binary", "ubinary"):
        expected = quantize_embeddings(floats.astype(np.float32), precision=kind, ranges=ranges)
        np.testing.assert_array_equal(np.array(getattr(got.embeddings, kind)), expected)
    assert got.texts == texts and got.meta.billed_units.input_tokens > 0
    query = client.embed(
        model=default_model.NAME, texts=texts[:1], input_type="search_query", embedding_types=["float"]
    )
    assert np.allclose(query.embeddings.float_[0], floats[0], atol=1e-6)  # MiniLM has no query template
    with pytest.raises(cohere.core.api_error.ApiError) as refused:
        client.embed(
            model=default_model.NAME,
            texts=texts,
            input_type="search_query",
            embedding_types=["int8"],
            output_dimension=64,
        )
    assert refused.value.status_code == 400


def test_cohere_sdk_v1_embed_answers_both_of_its_shapes(minilm_stack) -> None:
    """`cohere.Client(base_url=…).embed` (v1): with `embedding_types` the by-type shape v2 has, without it
    v1's bare float vectors; `input_type` may be left out."""
    import cohere

    url = minilm_stack.adapter_url
    texts = HELD_OUT[8:12]
    floats = np.array(
        [d["embedding"] for d in httpx.post(f"{url}/v1/embeddings", json={"input": texts}).json()["data"]]
    )
    client = cohere.Client(base_url=url, api_key="unused")
    by_type = client.embed(model=default_model.NAME, texts=texts, input_type="search_query", embedding_types=["float"])
    assert by_type.response_type == "embeddings_by_type"
    np.testing.assert_allclose(np.array(by_type.embeddings.float_), floats, atol=1e-6)
    bare = client.embed(model=default_model.NAME, texts=texts)
    assert bare.response_type == "embeddings_floats" and bare.texts == texts
    np.testing.assert_allclose(np.array(bare.embeddings), floats, atol=1e-6)
    assert bare.meta.billed_units.input_tokens == by_type.meta.billed_units.input_tokens > 0


LANGCHAIN = ROOT / "build" / "langchain-cohere"  # `make test` installs it (tests/langchain-cohere.txt)
LANGCHAIN_SCRIPT = """
import json, sys
from langchain_cohere import CohereEmbeddings
embeddings = CohereEmbeddings(model=sys.argv[2], base_url=sys.argv[1], cohere_api_key="unused")
texts = json.loads(sys.argv[3])
print(json.dumps({"documents": embeddings.embed_documents(texts), "query": embeddings.embed_query(texts[0])}))
"""


def test_langchain_cohere_embeddings_work_unchanged(minilm_stack) -> None:
    """LangChain's `CohereEmbeddings(base_url=…)`, as a user's code calls it (it sends Cohere's v1 embed), in
    a child process on its own packages: langchain-cohere needs the cohere SDK 5.x, the test extra has 7.x."""
    import json

    assert (LANGCHAIN / ".installed").exists(), "run `make test`: it installs LangChain into build/langchain-cohere"
    url = minilm_stack.adapter_url
    texts = HELD_OUT[12:16]
    floats = np.array(
        [d["embedding"] for d in httpx.post(f"{url}/v1/embeddings", json={"input": texts}).json()["data"]]
    )
    run = subprocess.run(
        [sys.executable, "-c", LANGCHAIN_SCRIPT, url, default_model.NAME, json.dumps(texts)],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(LANGCHAIN), "HOME": str(LANGCHAIN)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(np.array(got["documents"]), floats, atol=1e-6)
    np.testing.assert_allclose(got["query"], floats[0], atol=1e-6)  # MiniLM has no query template


def test_a_high_priority_request_overtakes_a_queue_of_low_priority_ones(minilm_stack) -> None:
    """Triton's dynamic batchers queue by priority level (the generated configs' `priority_levels`), and the
    ensemble passes the request's level to its steps: a request at level 1 sent behind 24 queued at level 3
    comes back before most of them (in arrival order it would come back after all of them)."""
    import asyncio

    import tritonclient.grpc.aio as grpcclient

    texts = [" ".join(["priority"] * 40 + [str(i)]) for i in range(64)]

    def inputs():
        data = np.array([[t.encode()] for t in texts], dtype=np.object_)
        tensor = grpcclient.InferInput("TEXT", list(data.shape), "BYTES")
        tensor.set_data_from_numpy(data)
        return [tensor]

    async def run() -> tuple[list[float], float, float]:
        client = grpcclient.InferenceServerClient(minilm_stack.grpc_url)
        done: dict[str, float] = {}

        async def one(tag: str, priority: int) -> None:
            await client.infer(default_model.NAME, inputs(), priority=priority, client_timeout=120)
            done[tag] = time.perf_counter()

        low = [asyncio.ensure_future(one(f"low{i}", 3)) for i in range(24)]
        await asyncio.sleep(0.3)  # the low ones are queued
        sent = time.perf_counter()
        await one("high", 1)
        await asyncio.gather(*low)
        await client.close()
        return [v for k, v in done.items() if k.startswith("low")], done["high"], sent

    lows, high, sent = asyncio.run(run())
    pending = [t for t in lows if t > sent]  # the low requests still queued or running when the high one went
    assert len(pending) >= 12, "the low requests finished before the high one was sent: give them more work"
    assert sum(t > high for t in pending) >= len(pending) // 2, sorted(t - high for t in pending)

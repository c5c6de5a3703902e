"""The adapter against real Triton: input forms, tokenize, dimensions, auth, metrics, limits, recovery."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from openai import OpenAI

from launcher import default_model
from launcher.processes import free_port, start_adapter, stop, wait_http
from launcher.tritonserver import TritonPorts, TritonServer

pytestmark = pytest.mark.e2e
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def hf_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(default_model.checkpoint()))


@pytest.fixture
def adapter(minilm_stack, tmp_path):
    """A second adapter on the same Triton, with the flags a test needs."""
    started = []

    def run(*flags: str) -> str:
        port = free_port()
        proc = start_adapter(
            port,
            minilm_stack.grpc_url,
            tmp_path / f"adapter-{port}.log",
            *flags,
            admin_key=minilm_stack.triton.admin_key,
        )
        started.append(proc)
        wait_http(f"http://127.0.0.1:{port}/health/ready", proc)
        return f"http://127.0.0.1:{port}"

    yield run
    for proc in started:
        stop(proc)


def test_openai_sdk_every_input_form(minilm_stack, hf_tokenizer) -> None:
    client = OpenAI(base_url=f"{minilm_stack.adapter_url}/v1", api_key="unused", max_retries=0)
    text = client.embeddings.create(model="minilm", input="a cat", encoding_format="float").data[0].embedding
    ids = hf_tokenizer("a cat")["input_ids"]  # [CLS] … [SEP]: token ids are the exact sequence the model sees
    for form in (ids, [ids, hf_tokenizer("a kitten")["input_ids"]]):
        default = client.embeddings.create(model="minilm", input=form)  # the SDK asks for base64 and decodes it
        np.testing.assert_allclose(default.data[0].embedding, text, atol=1e-6)
        raw = client.embeddings.create(model="minilm", input=form, encoding_format="base64")  # left encoded
        np.testing.assert_allclose(np.frombuffer(base64.b64decode(raw.data[0].embedding), "<f4"), text, atol=1e-6)
        floats = client.embeddings.create(model="minilm", input=form, encoding_format="float")
        np.testing.assert_allclose(floats.data[0].embedding, text, atol=1e-6)
    listed = client.embeddings.create(model="minilm", input=["a cat", "a kitten"], encoding_format="float")
    np.testing.assert_allclose(listed.data[0].embedding, text, atol=1e-6)
    usage = client.embeddings.create(model="minilm", input=[ids]).usage
    assert usage.prompt_tokens == len(ids)  # nothing added


def test_token_ids_outside_the_vocabulary_are_400(minilm_stack) -> None:
    r = httpx.post(f"{minilm_stack.adapter_url}/v1/embeddings", json={"input": [[101, 2000], [5, 10**7]]})
    assert r.status_code == 400
    assert "input[1][1] is token id 10000000, outside the vocabulary" in r.json()["error"]["message"]


def test_tokenize_returns_what_the_encoder_sees(minilm_stack, hf_tokenizer) -> None:
    for path in ("/tokenize", "/v1/tokenize"):
        r = httpx.post(f"{minilm_stack.adapter_url}{path}", json={"model": "minilm", "input": ["a cat", "word " * 600]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["tokens"][0] == hf_tokenizer("a cat")["input_ids"]
        assert body["counts"] == [4, 256] and body["max_tokens"] == 256 and body["total"] == 260


def test_dimensions_need_matryoshka_or_the_operator_option(minilm_stack, adapter) -> None:
    r = httpx.post(f"{minilm_stack.adapter_url}/v1/embeddings", json={"input": "a cat", "dimensions": 128})
    assert r.status_code == 400 and "not Matryoshka-trained" in r.json()["error"]["message"]
    assert "EMBED_ALLOW_ANY_DIMENSIONS=true" in r.json()["error"]["message"]  # how to allow it
    full = httpx.post(f"{minilm_stack.adapter_url}/v1/embeddings", json={"input": "a cat", "dimensions": 384})
    lossy = adapter("--allow-any-dimensions", "true")
    short = httpx.post(f"{lossy}/v1/embeddings", json={"input": "a cat", "dimensions": 128}).json()
    head = np.array(full.json()["data"][0]["embedding"][:128])
    np.testing.assert_allclose(short["data"][0]["embedding"], head / np.linalg.norm(head), atol=1e-6)
    bad = httpx.post(f"{lossy}/v1/embeddings", json={"input": "a cat", "dimensions": 0})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "dimensions"


def test_api_key_guards_the_api_but_not_health_or_metrics(adapter) -> None:
    url = adapter("--api-key", "s3cret")
    assert httpx.post(f"{url}/v1/embeddings", json={"input": "x"}).status_code == 401
    wrong = httpx.post(f"{url}/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    ok = httpx.post(f"{url}/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    assert OpenAI(base_url=f"{url}/v1", api_key="s3cret").embeddings.create(model="minilm", input="x").data
    for path in ("/health", "/health/ready", "/metrics"):
        assert httpx.get(f"{url}{path}").status_code == 200


def test_metrics_and_timing_headers(minilm_stack) -> None:
    r = httpx.post(f"{minilm_stack.adapter_url}/v1/embeddings", json={"model": "minilm", "input": ["a", "b"]})
    assert float(r.headers["x-total-time"]) >= float(r.headers["x-triton-time"]) > 0
    httpx.post(f"{minilm_stack.adapter_url}/v1/embeddings", json={"model": "minilm", "input": ""})
    text = httpx.get(f"{minilm_stack.adapter_url}/metrics").text
    # labelled with the served name whatever alias the request used
    assert 'embed_requests_total{model="all-MiniLM-L6-v2",route="embeddings",status="200"}' in text
    assert 'embed_requests_total{model="all-MiniLM-L6-v2",route="embeddings",status="400"}' in text
    assert 'embed_items_total{model="all-MiniLM-L6-v2"}' in text and 'model="minilm"' not in text
    assert "embed_stage_seconds_bucket" in text and "embed_in_flight_requests" in text


def test_unknown_fields_are_ignored(minilm_stack) -> None:
    r = httpx.post(f"{minilm_stack.adapter_url}/v1/embeddings", json={"input": "x", "user": "u", "foo": {"bar": 1}})
    assert r.status_code == 200


def test_body_cap_holds_for_chunked_bodies(adapter) -> None:
    url = adapter("--max-body-bytes", "2048")

    def chunks():
        yield b'{"input": "'
        yield b"x" * 4096
        yield b'"}'

    r = httpx.post(f"{url}/v1/embeddings", content=chunks(), headers=JSON)  # no Content-Length
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_in_flight_bound_answers_429_and_recovers(adapter) -> None:
    url = adapter("--max-in-flight", "1")

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=60) as client:
            body = {"input": ["a longer sentence about batching " * 8] * 64}
            rs = await asyncio.gather(*(client.post(f"{url}/v1/embeddings", json=body) for _ in range(8)))
            return [r.status_code for r in rs]

    statuses = asyncio.run(burst())
    assert 429 in statuses and 200 in statuses, statuses
    assert httpx.post(f"{url}/v1/embeddings", json={"input": "x"}).status_code == 200
    assert "embed_rejected_total" in httpx.get(f"{url}/metrics").text


def test_triton_down_is_503_quickly_and_the_adapter_recovers(minilm_repository, tmp_path) -> None:
    """Stop Triton: 503 within seconds; start it again on the same ports: 200 without restarting the adapter."""
    ports = TritonPorts(free_port(), free_port(), free_port())
    triton = TritonServer(minilm_repository[0], tmp_path, ports)
    triton.start()
    triton.wait_ready(240)
    port = free_port()
    proc = start_adapter(port, triton.grpc_url, tmp_path / "adapter.log", admin_key=triton.admin_key)
    url = f"http://127.0.0.1:{port}/v1/embeddings"
    try:
        wait_http(f"http://127.0.0.1:{port}/health/ready", proc)
        assert httpx.post(url, json={"input": "x"}).status_code == 200
        triton.stop()
        start = time.monotonic()
        r = httpx.post(url, json={"input": "x"}, timeout=30)
        assert r.status_code == 503 and r.json()["error"]["type"] == "service_unavailable"
        assert time.monotonic() - start < 5
        triton.start()
        triton.wait_ready(240)
        deadline = time.monotonic() + 30
        while (status := httpx.post(url, json={"input": "x"}, timeout=30).status_code) != 200:
            assert time.monotonic() < deadline, status
            time.sleep(0.5)
    finally:
        stop(proc)
        triton.stop()


def test_one_canonical_id_and_every_accepted_name_retrieves_it(minilm_stack) -> None:
    """The openai SDK's models.list() and models.retrieve(): the served name is the id everywhere."""
    from openai import NotFoundError

    client = OpenAI(base_url=f"{minilm_stack.adapter_url}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["all-MiniLM-L6-v2"]
    for name in ("all-MiniLM-L6-v2", "minilm", "sentence-transformers/all-MiniLM-L6-v2"):
        card = client.models.retrieve(name)
        assert card.id == "all-MiniLM-L6-v2" and card.model_extra["hf_id"] == "sentence-transformers/all-MiniLM-L6-v2"
        assert client.embeddings.create(model=name, input="a cat").model == "all-MiniLM-L6-v2"
    with pytest.raises(NotFoundError):
        client.models.retrieve("no-such-model")


def test_an_instruction_for_a_model_without_a_query_template_is_400(minilm_stack) -> None:
    body = {"input": "a cat", "input_type": "query", "instruction": "Find pets"}
    r = httpx.post(f"{minilm_stack.adapter_url}/v1/embeddings", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "instruction"
    assert "has no query template" in r.json()["error"]["message"]
    card = httpx.get(f"{minilm_stack.adapter_url}/v1/models/minilm").json()
    assert card["query_template"] is False and card["matryoshka_dimensions"] == [] and card["max_tokens"] == 256


def test_tokenize_ids_round_trip(minilm_stack) -> None:
    """/tokenize returned [101, 1037, 4937, 102] for "a cat", and those ids embedded with 6 tokens at cosine 0.89."""
    from tests.conftest import assert_token_ids_round_trip

    assert_token_ids_round_trip(minilm_stack.adapter_url, "minilm", "a cat")
    assert_token_ids_round_trip(minilm_stack.adapter_url, "minilm", "word " * 400)  # truncated as text is


def triton_calls(url: str) -> float:
    """Triton calls the adapter has made for the default model (its rows-per-call histogram's count)."""
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith('embed_triton_call_rows_count{ensemble="all-MiniLM-L6-v2"}'):
            return float(line.split()[-1])
    return 0.0


def test_concurrent_requests_share_triton_calls_and_keep_their_own_outcomes(adapter) -> None:
    """Joined into shared calls, each request still gets its own vectors, usage, headers and errors."""
    url = adapter("--calls-in-flight", "1")
    texts = [f"sentence number {i} about " + "bread " * (i % 7) for i in range(24)]
    alone = [httpx.post(f"{url}/v1/embeddings", json={"input": t, "truncate": "NONE"}).json() for t in texts]
    bodies: list[dict] = [{"input": t, "truncate": "NONE"} for t in texts]
    bodies[5] = {"input": ["fine", "word " * 600, "also fine"], "truncate": "NONE"}  # refused inside Triton
    before = triton_calls(url)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(*(client.post(f"{url}/v1/embeddings", json=b) for b in bodies))

    responses = asyncio.run(burst())
    calls = triton_calls(url) - before
    assert 0 < calls < len(bodies), calls  # requests shared calls
    refused = responses[5]
    assert refused.status_code == 400 and "input[1] has 602 tokens" in refused.json()["error"]["message"]
    for i, r in enumerate(responses):
        if i == 5:
            continue
        assert r.status_code == 200, r.text
        assert r.json()["usage"] == alone[i]["usage"] and float(r.headers["x-triton-time"]) > 0
        np.testing.assert_allclose(r.json()["data"][0]["embedding"], alone[i]["data"][0]["embedding"], atol=1e-5)


def test_coalescing_can_be_turned_off(adapter) -> None:
    """The same call path, never joined: concurrent requests of one lane each make their own calls."""
    import asyncio

    url = adapter("--coalesce", "false")
    before = triton_calls(url)

    async def send() -> list[int]:
        async with httpx.AsyncClient(timeout=60) as client:
            calls = [client.post(f"{url}/v1/embeddings", json={"input": [f"text {i}"]}) for i in range(8)]
            return [r.status_code for r in await asyncio.gather(*calls)]

    assert asyncio.run(send()) == [200] * 8
    assert triton_calls(url) - before == 8  # one call each: nothing joined


def test_tritons_admin_protocols_need_the_admin_key(minilm_stack) -> None:
    """Model control is code execution (a load with a `file:` override runs new Python in the server):
    the repository, shared-memory, statistics, trace and logging protocols answer only to the admin key,
    which the supervisor and the adapter's model listing hold (issue 23, item 1)."""
    import tritonclient.grpc as grpc

    from contract import ADMIN_HEADER, GRPC_ADMIN_HEADER

    base = f"http://{minilm_stack.triton.http_url}"
    key = {ADMIN_HEADER: minilm_stack.triton.admin_key}
    override = {"parameters": {"config": "{}", "file:1/model.py": base64.b64encode(b"import os").decode()}}
    for method, path in (
        ("POST", "/v2/repository/index"),
        ("POST", "/v2/repository/models/evil/load"),
        ("POST", f"/v2/repository/models/{default_model.NAME}/unload"),
        ("GET", f"/v2/models/{default_model.NAME}/stats"),
        ("GET", "/v2/trace/setting"),
        ("GET", "/v2/logging"),
        ("GET", "/v2/systemsharedmemory/status"),
    ):
        r = httpx.request(method, base + path, json=override if path.endswith("load") else None, timeout=10)
        assert r.status_code == 403 and "restricted" in r.text, (path, r.status_code, r.text)
    assert httpx.post(f"{base}/v2/repository/index", headers=key, timeout=10).status_code == 200
    assert httpx.get(f"{base}/v2/health/ready", timeout=10).status_code == 200  # probes stay open
    client = grpc.InferenceServerClient(minilm_stack.grpc_url)
    with pytest.raises(Exception, match="restricted"):
        client.load_model("evil")
    with pytest.raises(Exception, match="restricted"):
        client.get_model_repository_index()
    index = client.get_model_repository_index(headers={GRPC_ADMIN_HEADER: minilm_stack.triton.admin_key})
    assert any(m.name == default_model.NAME for m in index.models)
    assert client.is_model_ready(default_model.NAME)  # inference and metadata stay open to the adapter
    # ... and the key is not on the server's command line, which any user of the host can read (issue 32,
    # item 12): the launcher erases it once the server has parsed its flags.
    minilm_stack.triton.key_hidden.join(10)
    cmdline = Path(f"/proc/{minilm_stack.triton.process.pid}/cmdline").read_bytes()
    assert b"--http-restricted-api=" in cmdline and minilm_stack.triton.admin_key.encode() not in cmdline

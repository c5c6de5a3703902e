"""Contract tests of the adapter against a fake Triton: chunking, order, error translation."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient
from tritonclient.utils import InferenceServerException

from client.app import create_app
from client.coalescer import Coalescer
from client.errors import APIError
from client.settings import Settings
from client.triton import ServedModel, TritonClient, translate
from contract import EMBEDDING, SCORE, TOKEN_COUNT, EnsembleCard
from tests.test_coalescer import embed

MODEL = ServedModel("m", 3, EnsembleCard(4, 16, "org/m", ("alias",)))


class FakeTriton(TritonClient):
    """Embeds text i as a one-hot-ish vector of its length; records each call's size."""

    def __init__(self, models: list[ServedModel]) -> None:
        self._models = models
        self.calls: list[int] = []
        self.priorities: list[int] = []

    async def close(self) -> None:
        pass

    async def models(self) -> list[ServedModel]:
        return self._models

    async def call(self, name, rows, options, outputs=None, priority=0):
        texts = next(iter(rows.values()))
        self.calls.append(len(texts))
        self.priorities.append(priority)
        for i, t in enumerate(texts):
            if t == "bad":
                raise InferenceServerException(f"input[{i}] has 99 tokens", "StatusCode.INVALID_ARGUMENT")
        vectors = np.array([[len(t), 0, 0, 0] for t in texts], dtype=np.float32)
        counts = np.array([[len(t)] for t in texts], dtype=np.int32)
        every = {EMBEDDING: vectors, "input_ids": vectors.astype(np.int64), TOKEN_COUNT: counts}
        return {name: every[name] for name in outputs or (EMBEDDING, TOKEN_COUNT)}


@pytest.fixture
def fake() -> FakeTriton:
    return FakeTriton([MODEL])


@pytest.fixture
def client(fake) -> TestClient:
    with TestClient(create_app(Settings(max_items_per_request=10), triton=fake)) as c:
        yield c


def test_requests_are_chunked_by_max_batch_and_reassembled_in_order(client, fake) -> None:
    texts = ["a" * n for n in range(1, 8)]
    body = client.post("/v1/embeddings", json={"input": texts}).json()
    assert fake.calls == [3, 3, 1]
    assert [d["index"] for d in body["data"]] == list(range(7))
    assert [d["embedding"][0] for d in body["data"]] == list(range(1, 8))
    assert body["usage"]["prompt_tokens"] == sum(range(1, 8))


def test_base64_is_little_endian_float32(client) -> None:
    data = client.post("/v1/embeddings", json={"input": "abc", "encoding_format": "base64"}).json()["data"]
    assert np.frombuffer(base64.b64decode(data[0]["embedding"]), dtype="<f4").tolist() == [3, 0, 0, 0]


def test_error_index_is_shifted_to_the_whole_request(client) -> None:
    r = client.post("/v1/embeddings", json={"input": ["a", "b", "c", "d", "bad"]})
    assert r.status_code == 400 and r.json()["error"]["message"] == "input[4] has 99 tokens"


def test_item_cap_is_413(client) -> None:
    r = client.post("/v1/embeddings", json={"input": ["x"] * 11})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_model_name_optional_only_when_one_model_is_served() -> None:
    other = ServedModel("n", 3, EnsembleCard(4, 16))
    with TestClient(create_app(Settings(), triton=FakeTriton([MODEL, other]))) as c:
        r = c.post("/v1/embeddings", json={"input": "x"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "model"
        assert c.post("/v1/embeddings", json={"input": "x", "model": "n"}).status_code == 200
        assert c.post("/v1/embeddings", json={"input": "x", "model": "alias"}).json()["model"] == "m"  # canonical


@pytest.mark.parametrize(
    ("status", "expected"),
    [("StatusCode.UNAVAILABLE", 503), ("StatusCode.INVALID_ARGUMENT", 400), ("StatusCode.INTERNAL", 500)],
)
def test_translate_maps_grpc_status(status: str, expected: int) -> None:
    error = translate(InferenceServerException("boom", status))
    assert isinstance(error, APIError) and error.status == expected


VOCAB = ServedModel("v", 3, EnsembleCard(4, 16, vocab_size=100))


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([9223372036854775808], "input[0] is token id 9223372036854775808, outside the vocabulary"),  # the fuzzer's
        ([1, 2, 3, 4, 5, 2**64], "input[5] is token id 18446744073709551616, outside the vocabulary"),  # JSON float
        ([[1, 2], [3, -1]], "input[1][1] is token id -1, outside the vocabulary"),
        ([[1, 2], [3, 2**70]], "input[1][1] is token id 1180591620717411303424, outside the vocabulary"),
        ([1, 2.5], "input[1] must be an integer token id, got 2.5"),
        ([7, 100], "input[1] is token id 100, outside the vocabulary (0–99)"),  # the model's own vocabulary
        ([[7], [99, 100]], "input[1][1] is token id 100, outside the vocabulary (0–99)"),
    ],
)
def test_token_ids_outside_the_vocabulary_name_item_and_position(ids, message) -> None:
    with TestClient(create_app(Settings(), triton=FakeTriton([VOCAB]))) as c:
        r = c.post("/v1/embeddings", json={"input": ids})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"] == message and r.json()["error"]["param"] == "input"


def test_metric_labels_are_served_names(client) -> None:
    """Aliases count under the served name; unknown names and unparsed bodies share one label."""
    client.post("/v1/embeddings", json={"input": "x", "model": "alias"})
    client.post("/v1/embeddings", json={"input": "x", "model": "org/m"})
    client.post("/v1/embeddings", json={"input": "", "model": "m"})  # 400 after resolution
    for i in range(20):
        client.post("/v1/embeddings", json={"input": "x", "model": f"made-up-{i}"})
    client.post("/v1/embeddings", content=b"{not json", headers={"Content-Type": "application/json"})
    client.post("/v1/embeddings", json={"input": 5, "model": "alias"})  # fails validation, names a served model
    client.post("/tokenize", json={"input": "x", "model": "alias"})
    text = client.get("/metrics").text
    assert 'embed_requests_total{model="m",route="embeddings",status="200"} 2.0' in text
    assert 'embed_requests_total{model="m",route="embeddings",status="400"} 2.0' in text
    assert 'embed_requests_total{model="m",route="tokenize",status="200"} 1.0' in text
    assert 'embed_requests_total{model="unknown",route="embeddings",status="404"} 20.0' in text
    assert 'embed_requests_total{model="unknown",route="embeddings",status="400"} 1.0' in text
    assert "made-up" not in text and 'model="alias"' not in text
    assert 'embed_stage_seconds_count{model="unknown",stage="triton"}' not in text  # no Triton stage when none ran


def test_every_response_carries_a_request_id(client) -> None:
    for r in (
        client.post("/v1/embeddings", json={"input": "x"}),
        client.post("/v1/embeddings", json={"input": ""}),
        client.post("/v1/embeddings", json={"input": "x", "model": "nope"}),
        client.get("/health"),
        client.get("/metrics"),
        client.get("/no-such-path"),
    ):
        assert len(r.headers["x-request-id"]) == 32, r.headers
    assert client.get("/health", headers={"x-request-id": "trace-42"}).headers["x-request-id"] == "trace-42"
    odd = client.get("/health", headers={"x-request-id": "bad id\twith spaces"}).headers["x-request-id"]
    assert odd != "bad id\twith spaces" and len(odd) == 32


class FailingTriton(FakeTriton):
    """Fails every call with a Triton error carrying internal detail."""

    def __init__(self, models, status: str, message: str) -> None:
        super().__init__(models)
        self.status, self.message = status, message

    async def call(self, name, rows, options, outputs=None, priority=0):
        raise InferenceServerException(self.message, self.status)


@pytest.mark.parametrize(
    ("status", "message", "code"),
    [
        ("StatusCode.INTERNAL", "encoder failed: onnxruntime_pybind11_state.Fail /opt/secret/model.onnx", 500),
        ("StatusCode.INTERNAL", "Stub process 'm_encoder_0_0' is not healthy.", 503),
        ("StatusCode.INTERNAL", "Request for unknown model: 'm' has no available versions", 503),  # reloading
        ("StatusCode.UNAVAILABLE", "failed to connect to all addresses; 10.0.0.7:8001", 503),
    ],
)
def test_5xx_hide_internal_text_and_log_it_under_the_request_id(status, message, code, caplog) -> None:
    with TestClient(create_app(Settings(), triton=FailingTriton([MODEL], status, message))) as c:
        r = c.post("/v1/embeddings", json={"input": "x"})
    rid = r.headers["x-request-id"]
    error = r.json()["error"]
    assert r.status_code == code and error["message"].endswith(f"(request id {rid})")
    assert not any(inner in r.text for inner in ("secret", "10.0.0.7", "Stub", "unknown model"))
    assert any(rid in rec.getMessage() and message in rec.getMessage() for rec in caplog.records)


def test_an_unexpected_exception_is_a_generic_500_with_an_id(caplog) -> None:
    class Broken(FakeTriton):
        async def call(self, *args):
            raise RuntimeError("secret internal state")

    with TestClient(create_app(Settings(), triton=Broken([MODEL])), raise_server_exceptions=False) as c:
        r = c.post("/v1/embeddings", json={"input": "x"})
    assert r.status_code == 500 and "secret" not in r.text
    assert r.json()["error"]["message"] == f"internal error (request id {r.headers['x-request-id']})"
    assert "secret internal state" in caplog.text


class FakeResult:
    def __init__(self, n: int) -> None:
        self.n = n

    def as_numpy(self, name: str) -> np.ndarray:
        return np.ones((self.n, 4), np.float32) if name == "EMBEDDING" else np.ones((self.n, 1), np.int32)


class FlakyGrpc:
    """A gRPC client whose first calls fail with `errors`, one each, then succeed."""

    def __init__(self, errors: list[InferenceServerException]) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.sent: list = []
        self.deadlines: list[tuple[float, int | None]] = []

    async def infer(self, name, inputs, outputs, client_timeout, timeout=None, priority=0):
        self.calls += 1
        self.sent = inputs
        self.deadlines.append((client_timeout, timeout))
        if self.errors:
            raise self.errors.pop(0)
        return FakeResult(inputs[0].shape()[0])


def apart(triton: TritonClient) -> Coalescer:
    """The adapter's call path with coalescing off: each request's pieces are their own calls."""
    return Coalescer(triton, 1, join=False)


def flaky_client(errors: list[InferenceServerException]) -> TritonClient:
    triton = TritonClient.__new__(TritonClient)
    triton.client, triton.timeout_s, triton.connect_timeout_s = FlakyGrpc(errors), 5.0, 1.0
    triton.url, triton.admin_headers = "127.0.0.1:8001", None
    return triton


@pytest.mark.parametrize(
    "error",
    [
        InferenceServerException("Socket closed", "StatusCode.UNAVAILABLE"),
        InferenceServerException("Stub process 'm_encoder_0_0' is not healthy.", "StatusCode.INTERNAL"),
        InferenceServerException("Request for unknown model: 'm' has no available versions", "StatusCode.INTERNAL"),
    ],
)
def test_a_call_lost_with_its_replica_is_retried_once(error) -> None:
    import asyncio

    triton = flaky_client([error])
    vectors, counts = asyncio.run(embed(apart(triton), "m", ["a", "b"], 8))
    assert vectors.shape == (2, 4) and triton.client.calls == 2
    twice = flaky_client([error, error])
    with pytest.raises(APIError) as caught:
        asyncio.run(embed(apart(twice), "m", ["a"], 8))
    assert caught.value.status == 503 and twice.client.calls == 2  # once more, not forever


def test_a_refused_input_is_never_retried() -> None:
    import asyncio

    triton = flaky_client([InferenceServerException("input[0] has 600 tokens", "StatusCode.INVALID_ARGUMENT")])
    with pytest.raises(APIError) as caught:
        asyncio.run(embed(apart(triton), "m", ["a"], 8))
    assert caught.value.status == 400 and triton.client.calls == 1


def test_a_model_missing_while_it_reloads_is_503_not_404() -> None:
    fake = FakeTriton([MODEL])
    with TestClient(create_app(Settings(model_refresh_s=0, model_refresh_min_s=0), triton=fake)) as c:
        assert c.post("/v1/embeddings", json={"input": "x"}).status_code == 200
        fake._models = []  # the ensemble is unloaded while its stub's model reloads
        for body in ({"input": "x"}, {"input": "x", "model": "alias"}):
            r = c.post("/v1/embeddings", json=body)
            assert r.status_code == 503 and "retry shortly" in r.json()["error"]["message"], r.text
        assert c.post("/v1/embeddings", json={"input": "x", "model": "never-served"}).status_code == 404
        fake._models = [MODEL]
        assert c.post("/v1/embeddings", json={"input": "x", "model": "alias"}).status_code == 200


def test_a_model_listing_lost_with_its_replica_is_asked_again() -> None:
    import asyncio

    class Index(FlakyGrpc):
        async def get_model_repository_index(self, as_json, client_timeout, headers=None):
            self.calls += 1
            if self.errors:
                raise self.errors.pop(0)
            return {"models": []}

    triton = TritonClient.__new__(TritonClient)
    triton.client, triton.timeout_s, triton.connect_timeout_s = Index([]), 5.0, 1.0
    triton.url, triton.admin_headers = "127.0.0.1:8001", None
    triton.client.errors = [InferenceServerException("Stream removed", "StatusCode.UNAVAILABLE")]
    assert asyncio.run(triton.models()) == [] and triton.client.calls == 2
    triton.client.errors = [InferenceServerException("bad config", "StatusCode.INVALID_ARGUMENT")]
    with pytest.raises(APIError):
        asyncio.run(triton.models())
    assert triton.client.calls == 3  # not retried


def test_a_dns_target_follows_replicas_as_they_come_and_go(monkeypatch) -> None:
    """`dns:///triton:8001`: gRPC alone never saw a replica added by `--scale triton=2`."""
    import asyncio
    import socket as sock

    from client import triton as triton_module

    answers = [["172.18.0.2"], ["172.18.0.2"], ["172.18.0.2", "172.18.0.3"], ["172.18.0.3"]]
    made: list[str] = []

    class Channel:
        def __init__(self, url, channel_args):
            made.append(url)

        async def close(self):
            pass

    async def getaddrinfo(self, host, port, type=0):  # noqa: A002 - asyncio's name
        assert (host, port) == ("triton", 8001)
        return [(sock.AF_INET, sock.SOCK_STREAM, 6, "", (a, port)) for a in answers.pop(0)]

    monkeypatch.setattr(triton_module.grpcclient, "InferenceServerClient", Channel)
    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", getaddrinfo)

    async def run() -> list[bool]:
        client = TritonClient("dns:///triton:8001", 5.0, 1.0)
        changed = [await client.follow_dns() for _ in range(4)]
        await client.close()
        return changed

    assert asyncio.run(run()) == [False, False, True, True]
    assert made == ["dns:///triton:8001", "ipv4:172.18.0.2:8001,172.18.0.3:8001", "ipv4:172.18.0.3:8001"]
    assert triton_module.dns_target("triton:8001") is None
    assert triton_module.address_target(["fd00::2"], 8001) == "ipv6:[fd00::2]:8001"


def test_a_cancelled_request_never_cancels_its_inference_in_flight() -> None:
    """The adapter cancels what a failed request still fetches, never a Triton call in flight: the call
    runs to its end and its answer is dropped."""
    import asyncio

    class SlowGrpc(FlakyGrpc):
        def __init__(self) -> None:
            super().__init__([])
            self.finished = 0

        async def infer(self, name, inputs, outputs, client_timeout, timeout=None, priority=0):
            await asyncio.sleep(0.2)
            self.finished += 1
            return FakeResult(inputs[0].shape()[0])

    async def run() -> int:
        triton = flaky_client([])
        triton.client = SlowGrpc()
        task = asyncio.ensure_future(embed(apart(triton), "m", ["a"], 8))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.3)
        return triton.client.finished

    assert asyncio.run(run()) == 1


class ScoringTriton(FakeTriton):
    """Also serves a reranker `r`: the score of a document is its length minus the query's."""

    async def call(self, name, rows, options, outputs=None, priority=0):
        if name != "r":
            return await super().call(name, rows, options, outputs, priority)
        scores = [[len(d) - len(q)] for d, q in zip(rows["TEXT"], rows["QUERY"], strict=True)]
        return {SCORE: np.array(scores, dtype=np.float32), TOKEN_COUNT: np.ones((len(scores), 1), dtype=np.int32)}


RERANKER = ServedModel("r", 4, EnsembleCard(1, 512, controls=("TRUNCATE", "MAX_DOC_TOKENS"), task="rerank"))


def test_a_request_for_an_output_the_model_lacks_names_its_task_and_route() -> None:
    """Sparse and multi-vector routes on an embed-only model or a reranker: a 400 naming what it serves."""
    with TestClient(create_app(Settings(), triton=ScoringTriton([MODEL, RERANKER]))) as c:
        sparse = c.post("/embed_sparse", json={"model": "m", "inputs": "abc"})
        assert sparse.status_code == 400
        assert "serves embed, not sparse: send it to /v1/embeddings" in sparse.json()["error"]["message"]
        pooled = c.post("/pooling", json={"model": "r", "input": "abc", "task": "token_embed"})
        assert pooled.status_code == 400
        assert "serves rerank, not multivector: send it to /v1/rerank" in pooled.json()["error"]["message"]
        alone = c.post("/embed_sparse", json={"inputs": ["abc"]})  # no model named, and none is sparse
        assert alone.status_code == 400 and "no served model serves sparse" in alone.json()["error"]["message"]


def test_each_route_takes_only_models_of_its_task() -> None:
    with TestClient(create_app(Settings(), triton=ScoringTriton([MODEL, RERANKER]))) as c:
        embedded = c.post("/v1/embeddings", json={"input": "abc"})  # the only embedder
        assert embedded.status_code == 200 and embedded.json()["model"] == "m"
        ranked = c.post("/v1/rerank", json={"query": "q", "documents": ["aaa", "a", "aa"]})
        assert ranked.status_code == 200 and ranked.json()["model"] == "r"  # the only reranker
        assert [x["index"] for x in ranked.json()["results"]] == [0, 2, 1]
        assert ranked.json()["results"][0]["relevance_score"] == pytest.approx(1 / (1 + np.exp(-2)))
        wrong = c.post("/v1/rerank", json={"model": "m", "query": "q", "documents": ["a"]})
        assert wrong.status_code == 400
        assert "serves embed, not rerank: send it to /v1/embeddings" in wrong.json()["error"]["message"]
        wrong = c.post("/v1/embeddings", json={"model": "r", "input": "a"})
        assert wrong.status_code == 400
        assert "serves rerank, not embed: send it to /v1/rerank" in wrong.json()["error"]["message"]
        tei = c.post("/rerank", json={"query": "q", "texts": ["a", "aaaa"], "raw_scores": True})
        assert tei.json() == [{"index": 1, "score": 3.0}, {"index": 0, "score": 0.0}]
    with TestClient(create_app(Settings(), triton=ScoringTriton([MODEL]))) as c:
        none = c.post("/v1/rerank", json={"query": "q", "documents": ["a"]})
        assert none.status_code == 400 and "no served model serves rerank" in none.json()["error"]["message"]


def test_a_rerank_query_and_document_count_are_bounded_before_any_call() -> None:
    fake = ScoringTriton([RERANKER])
    settings = Settings(max_query_chars=10, max_documents_per_request=3)
    with TestClient(create_app(settings, triton=fake)) as c:
        long_query = c.post("/v1/rerank", json={"query": "q" * 11, "documents": ["a"]})
        many = c.post("/v1/rerank", json={"query": "q", "documents": ["a"] * 4})
        assert (long_query.status_code, many.status_code) == (413, 413)
        assert fake.calls == []


def test_a_404_lists_each_served_model_once_with_its_other_names(client) -> None:
    r = client.post("/v1/embeddings", json={"model": "nope", "input": "a"})
    assert r.status_code == 404
    assert r.json()["error"]["message"] == "The model 'nope' does not exist; served models: m (also org/m, alias)"


def test_every_adapter_log_line_carries_the_time_and_the_request_id(tmp_path) -> None:
    """The adapter as `make serve` runs it (uvicorn, its access log): `grep <id>` finds every line of a
    request, the access line included, each with its time."""
    import httpx

    from launcher.processes import free_port, start_adapter, stop, wait_http

    port, log = free_port(), tmp_path / "adapter.log"
    adapter = start_adapter(port, f"127.0.0.1:{free_port()}", log, "--connect-timeout-s", "1")  # no Triton there
    try:
        wait_http(f"http://127.0.0.1:{port}/health", adapter, timeout=60)
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/embeddings", json={"input": "a"}, headers={"x-request-id": "trace-7"}
        )
        assert r.status_code == 503
    finally:
        stop(adapter)
    lines = [line for line in log.read_text().splitlines() if "trace-7" in line]
    assert any("uvicorn.access" in line and "/v1/embeddings" in line for line in lines), lines
    assert any("client" in line and "503" in line for line in lines), lines
    stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ trace-7 \S+: ")
    assert all(stamp.match(line) for line in lines), lines


def test_the_rerank_routes_need_the_api_key() -> None:
    """The cohere SDK sends `Authorization: Bearer <api_key>`, as the openai SDK does."""
    with TestClient(create_app(Settings(api_key="k"), triton=ScoringTriton([RERANKER]))) as c:
        body = {"query": "q", "documents": ["a"]}
        for path in ("/v1/rerank", "/v2/rerank"):
            assert c.post(path, json=body).status_code == 401
            assert c.post(path, json=body, headers={"Authorization": "Bearer k"}).status_code == 200
        assert c.post("/rerank", json={"query": "q", "texts": ["a"]}).status_code == 401


def test_unknown_fields_are_logged_once_by_every_route(caplog) -> None:
    """One base model logs a request's unknown fields, whatever its route (issue 33: check once)."""
    import logging

    with (
        caplog.at_level(logging.INFO, "client.protocol"),
        TestClient(create_app(Settings(), triton=ScoringTriton([MODEL, RERANKER]))) as c,
    ):
        for path, body in (
            ("/v1/embeddings", {"model": "m", "input": "a", "extra_one": 1}),
            ("/v1/rerank", {"model": "r", "query": "q", "documents": ["a"], "extra_one": 1}),
            ("/rerank", {"model": "r", "query": "q", "texts": ["a"], "extra_one": 1}),
            ("/tokenize", {"model": "m", "input": "a", "extra_one": 1}),
        ):
            caplog.clear()
            assert c.post(path, json=body).status_code == 200, path
            lines = [r.getMessage() for r in caplog.records if "unknown request fields" in r.getMessage()]
            assert lines == ["ignoring unknown request fields: 'extra_one'"], (path, lines)


def test_compressed_embeddings_follow_the_cards_calibration_and_size() -> None:
    """int8/uint8 need the card's calibration, at the full dimension; binary packs any size; the float
    vectors are cut and re-normalised first."""
    ranges = (0.0, -1.0, -1.0, -1.0, 8.0, 1.0, 1.0, 1.0)  # minimums, then maximums
    calibrated = ServedModel("c", 3, EnsembleCard(4, 16, matryoshka_dimensions=(2,), int8_ranges=ranges))
    with TestClient(create_app(Settings(), triton=FakeTriton([MODEL, calibrated]))) as c:
        got = c.post("/v1/embeddings", json={"model": "c", "input": "ab", "embedding_type": "uint8"})
        assert got.status_code == 200 and got.json()["data"][0]["embedding"] == [63, 127, 127, 127]  # 2 of 0…8
        packed = c.post(
            "/v1/embeddings", json={"model": "c", "input": "ab", "embedding_type": "binary", "dimensions": 2}
        )
        assert packed.json()["data"][0]["embedding"] == [0b10000000 - 128]  # one bit set, packed, offset
        cut = c.post("/v1/embeddings", json={"model": "c", "input": "ab", "embedding_type": "int8", "dimensions": 2})
        assert cut.status_code == 400 and "calibrated for the full 4 dimensions" in cut.json()["error"]["message"]
        bare = c.post("/v1/embeddings", json={"model": "m", "input": "ab", "embedding_type": "int8"})
        assert bare.status_code == 400 and "no int8 calibration" in bare.json()["error"]["message"]


def test_nim_ranking_and_vllm_score_shape_the_rerank_and_embed_tasks() -> None:
    """NIM's /v1/ranking (logits, best first) and vLLM's /score (a reranker's relevance score of each pair,
    or an embedder's cosine), with vLLM's pairing rule."""
    with TestClient(create_app(Settings(), triton=ScoringTriton([MODEL, RERANKER]))) as c:
        nim = c.post("/v1/ranking", json={"query": {"text": "q"}, "passages": [{"text": "a"}, {"text": "aaa"}]})
        assert nim.status_code == 200 and nim.json() == {
            "rankings": [{"index": 1, "logit": 2.0}, {"index": 0, "logit": 0.0}]
        }
        scored = c.post("/score", json={"model": "r", "text_1": "q", "text_2": ["aaa", "a"]}).json()
        assert scored["object"] == "list" and [d["object"] for d in scored["data"]] == ["score", "score"]
        assert [d["score"] for d in scored["data"]] == pytest.approx([1 / (1 + np.exp(-2)), 0.5])
        pairwise = c.post("/v1/score", json={"model": "r", "text_1": ["q", "qq"], "text_2": ["aaa", "aaa"]}).json()
        assert [d["score"] for d in pairwise["data"]] == pytest.approx([1 / (1 + np.exp(-2)), 1 / (1 + np.exp(-1))])
        cosine = c.post("/score", json={"model": "m", "text_1": "ab", "text_2": ["abc", "a"]}).json()
        assert [d["score"] for d in cosine["data"]] == pytest.approx([1.0, 1.0])  # the fake's vectors are parallel
        uneven = c.post("/score", json={"model": "r", "text_1": ["a", "b"], "text_2": ["a", "b", "c"]})
        assert (
            uneven.status_code == 400 and "give one text_1, or as many as text_2" in uneven.json()["error"]["message"]
        )


def test_cohere_v2_embed_refuses_what_it_cannot_honour() -> None:
    with TestClient(create_app(Settings(), triton=FakeTriton([MODEL]))) as c:
        base = {"model": "m", "input_type": "search_document"}
        both = c.post("/v2/embed", json={**base, "texts": ["a"], "images": ["data:image/png;base64,AA=="]})
        assert both.status_code == 400 and "either texts or images" in both.json()["error"]["message"]
        assert c.post("/v2/embed", json={**base, "texts": []}).status_code == 400
        capped = c.post("/v2/embed", json={**base, "texts": ["a"], "max_tokens": 8})
        assert capped.status_code == 400 and "max_tokens" in capped.json()["error"]["message"]
        kind = c.post("/v2/embed", json={**base, "texts": ["a"], "embedding_types": ["float", "fp8"]})
        assert kind.status_code == 400
        ok = c.post("/v2/embed", json={**base, "texts": ["ab"], "embedding_types": ["float", "ubinary"]}).json()
        assert ok["embeddings"] == {"float": [[2.0, 0.0, 0.0, 0.0]], "ubinary": [[128]]}
        assert ok["response_type"] == "embeddings_by_type" and ok["meta"]["billed_units"]["input_tokens"] == 2


def test_cohere_routes_answer_errors_in_both_shapes() -> None:
    """An error on Cohere's routes carries Cohere's top-level `message` beside the OpenAI `error` object
    (every kind of error: the body model's, the route's own, the gate's); elsewhere the OpenAI body alone."""
    with TestClient(create_app(Settings(max_body_bytes=4096), triton=FakeTriton([MODEL]))) as c:
        for path, body in (
            ("/v2/embed", {"model": "m", "texts": ["a"]}),  # input_type missing: the body model's
            ("/v1/embed", {"model": "m", "texts": []}),  # the route's own check
            ("/v1/embed", {"model": "m", "texts": ["a" * 5000]}),  # the gate's body cap: 413
            ("/v2/rerank", {"model": "m", "query": "q"}),
            ("/v1/rerank", {"model": "nope", "query": "q", "documents": ["d"]}),
        ):
            r = c.post(path, json=body)
            error = r.json()
            assert r.status_code in (400, 404, 413) and error["message"] == error["error"]["message"], (path, error)
        other = c.post("/v1/embeddings", json={"model": "m", "input": []}).json()
        assert set(other) == {"error"}
        v1 = c.post("/v1/embed", json={"model": "m", "texts": ["ab"]}).json()  # no embedding_types: v1's floats
        assert v1["response_type"] == "embeddings_floats" and v1["embeddings"] == [[2.0, 0.0, 0.0, 0.0]]
        assert c.post("/v1/embed", json={"model": "m", "texts": ["ab"], "truncate": None}).status_code == 200


def test_a_requests_priority_reaches_triton_as_its_level() -> None:
    """vLLM's `priority` (lower first) on every inference route: Triton's level 1 below 0, 3 above, and 0
    (the model's default, level 2) when unset; each level is a lane of its own in the coalescer."""
    triton = ScoringTriton([MODEL, RERANKER])
    with TestClient(create_app(Settings(), triton=triton)) as c:
        for priority in (-5, 0, 7):
            assert c.post("/v1/embeddings", json={"model": "m", "input": "a", "priority": priority}).status_code == 200
        assert c.post("/v2/embed", json={"model": "m", "texts": ["a"], "input_type": "search_query", "priority": -1})
        assert c.post("/v1/embeddings", json={"input": "a", "priority": "high"}).status_code == 400
    assert triton.priorities == [1, 0, 3, 1]


def test_per_token_vectors_are_bounded_before_inference() -> None:
    """A 1,024-wide vector per token turns a 2 MiB body into gigabytes: /pooling token_embed and MaxSim
    reranking count the vectors a request may make (UTF-8 bytes plus a frame, capped at the model's limit)
    against `max_token_vectors_per_request` before any Triton call."""
    multi = ServedModel("mv", 3, EnsembleCard(4, 64, tasks=("multivector",)))
    triton = FakeTriton([multi])
    with TestClient(create_app(Settings(max_token_vectors_per_request=100), triton=triton)) as c:
        pooled = c.post("/pooling", json={"input": ["x" * 60, "y" * 60], "task": "token_embed"})
        assert pooled.status_code == 413 and "up to 128 token vectors" in pooled.json()["error"]["message"]
        ranked = c.post("/v1/rerank", json={"query": "q", "documents": ["d" * 50, "e" * 50]})
        assert ranked.status_code == 413 and "the maximum is 100" in ranked.json()["error"]["message"]
    assert triton.calls == []

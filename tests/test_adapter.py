"""Contract tests of the adapter against a fake Triton: chunking, order, error translation."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from fastapi.testclient import TestClient
from tritonclient.utils import InferenceServerException

from client.app import create_app
from client.errors import APIError
from client.settings import Settings
from client.triton import ServedModel, TritonClient, translate

MODEL = ServedModel("m", "org/m", ("alias",), 4, 16, ("text",), max_batch_size=3)


class FakeTriton(TritonClient):
    """Embeds text i as a one-hot-ish vector of its length; records each call's size."""

    def __init__(self, models: list[ServedModel]) -> None:
        self._models = models
        self.calls: list[int] = []

    async def close(self) -> None:
        pass

    async def models(self) -> list[ServedModel]:
        return self._models

    async def _infer(self, name, tensor, texts, options, positions):
        self.calls.append(len(texts))
        for i, t in enumerate(texts):
            if t == "bad":
                raise translate(
                    InferenceServerException(f"input[{i}] has 99 tokens", "StatusCode.INVALID_ARGUMENT"), positions
                )
        vectors = np.array([[len(t), 0, 0, 0] for t in texts], dtype=np.float32)
        return vectors, np.array([len(t) for t in texts], dtype=np.int32)


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
    other = ServedModel("n", "", (), 4, 16, ("text",), 3)
    with TestClient(create_app(Settings(), triton=FakeTriton([MODEL, other]))) as c:
        r = c.post("/v1/embeddings", json={"input": "x"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "model"
        assert c.post("/v1/embeddings", json={"input": "x", "model": "n"}).status_code == 200
        assert c.post("/v1/embeddings", json={"input": "x", "model": "alias"}).json()["model"] == "alias"


@pytest.mark.parametrize(
    ("status", "expected"),
    [("StatusCode.UNAVAILABLE", 503), ("StatusCode.INVALID_ARGUMENT", 400), ("StatusCode.INTERNAL", 500)],
)
def test_translate_maps_grpc_status(status: str, expected: int) -> None:
    error = translate(InferenceServerException("boom", status))
    assert isinstance(error, APIError) and error.status == expected

"""BGE-M3 through real Triton and the adapter, against FlagEmbedding's own `BGEM3FlagModel` on a tiny
random checkpoint with the real file layout (`sparse_linear.pt`, `colbert_linear.pt`): the dense vector
(`/v1/embeddings`), the lexical weights (TEI's `/embed_sparse`) and the ColBERT vectors (vLLM's
`/pooling`, `token_embed`), all from one ensemble, on the `local` and `torch` targets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from export.build import Progress, export
from export.request import ExportRequest
from tests.conftest import target_stack
from tests.tiny.bge_m3 import bge_m3

NAME = "bge-m3-tiny"
TEXTS = [
    "What is BGE M3?",
    "BM25 is a bag-of-words retrieval function; BGE-M3 weighs each token itself.",
    "repeat repeat repeat the same token, the same token",
    "Ünïcödé, 中文 and emoji 🚀 appear in real traffic.",
    "a long passage about dense, sparse and multi-vector retrieval " * 40,  # cut to the tiny model's 512
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return bge_m3(tmp_path_factory.mktemp("bge-m3") / "bge-m3-tiny")


def serve(checkpoint: Path, tmp_path_factory, target: str) -> Iterator:
    from launcher.stack import running_stack

    repo = tmp_path_factory.mktemp(f"bge-m3-repo-{target}")
    export(ExportRequest(checkpoint, repo, NAME, hf_id="BAAI/bge-m3", target=target), Progress())
    with running_stack(repo, tmp_path_factory.mktemp(f"bge-m3-stack-{target}")) as s:
        yield s


stack = target_stack(serve, "checkpoint", "local")
torch_stack = target_stack(serve, "checkpoint", "torch")


@pytest.fixture(scope="module")
def flag(checkpoint: Path) -> dict:
    """FlagEmbedding's answers: `encode` with every output, and the model for `colbert_score`."""
    from FlagEmbedding import BGEM3FlagModel

    model = BGEM3FlagModel(str(checkpoint), use_fp16=False, devices="cpu")
    out = model.encode(TEXTS, return_dense=True, return_sparse=True, return_colbert_vecs=True, max_length=512)
    return {"model": model, **out}


def post(stack, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{stack.adapter_url}{path}", json=body, timeout=120)


def test_dense_vectors_match_flagembedding(served, flag) -> None:
    got = post(served, "/v1/embeddings", {"model": NAME, "input": TEXTS})
    assert got.status_code == 200, got.text
    vectors = np.array([d["embedding"] for d in got.json()["data"]])
    cosines = (vectors * flag["dense_vecs"]).sum(axis=1) / np.linalg.norm(vectors, axis=1)
    assert cosines.min() >= 0.99999


def test_sparse_weights_match_flagembedding(served, flag) -> None:
    got = post(served, "/embed_sparse", {"inputs": TEXTS})
    assert got.status_code == 200, got.text
    assert int(got.headers["x-compute-tokens"]) > 0
    for row, reference in zip(got.json(), flag["lexical_weights"], strict=True):
        indices = [e["index"] for e in row]
        assert indices == sorted(indices) and all(e["value"] > 0 for e in row)
        assert {str(i) for i in indices} == set(reference)
        for e in row:
            assert e["value"] == pytest.approx(float(reference[str(e["index"])]), abs=1e-5)
    assert len(post(served, "/embed_sparse", {"inputs": "one string"}).json()) == 1  # a list even for one


def test_multivectors_match_flagembedding(served, flag) -> None:
    got = post(served, "/pooling", {"model": NAME, "input": TEXTS, "task": "token_embed"})
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["object"] == "list" and body["usage"]["prompt_tokens"] > 0
    for item, reference in zip(body["data"], flag["colbert_vecs"], strict=True):
        vectors = np.array(item["data"])
        assert item["object"] == "pooling" and vectors.shape == reference.shape
        cosines = (
            (vectors * reference).sum(axis=1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(reference, axis=1)
        )
        assert cosines.min() >= 0.99999
    maxsim = [flag["model"].colbert_score(flag["colbert_vecs"][0], r) for r in flag["colbert_vecs"]]
    served_vectors = [np.array(item["data"], dtype=np.float32) for item in body["data"]]
    ours = [float((served_vectors[0] @ d.T).max(axis=1).mean()) for d in served_vectors]
    np.testing.assert_allclose(ours, [float(s) for s in maxsim], atol=1e-5)


def test_truncation_follows_tei(stack) -> None:
    refused = post(stack, "/embed_sparse", {"inputs": TEXTS[-1], "truncate": False})
    assert refused.status_code in (400, 413), refused.text
    left = post(stack, "/embed_sparse", {"inputs": TEXTS[-1], "truncate": True, "truncation_direction": "Left"})
    assert left.status_code == 200 and left.json()[0]


def test_each_route_names_the_model_task_and_route(stack) -> None:
    listed = httpx.get(f"{stack.adapter_url}/v1/models").json()["data"][0]
    assert listed["task"] == "embed" and listed["tasks"] == ["embed", "sparse", "multivector"]
    wrong = post(stack, "/pooling", {"model": NAME, "input": "x", "task": "classify"})
    assert wrong.status_code == 400 and "token_embed" in wrong.json()["error"]["message"]
    empty = post(stack, "/embed_sparse", {"inputs": []})
    assert empty.status_code == 400


def test_a_multivector_model_reranks_by_maxsim(served, flag) -> None:
    """`/v1/rerank`, `/v2/rerank` and TEI's `/rerank` score each document by FlagEmbedding's `colbert_score`
    of the query's and the document's vectors (encoded apart), best first, the score as it is."""
    query, documents = TEXTS[0], TEXTS[1:]
    model = flag["model"]
    encoded = model.encode([query, *documents], return_dense=False, return_colbert_vecs=True, max_length=512)
    vecs = encoded["colbert_vecs"]
    expected = np.array([float(model.colbert_score(vecs[0], d)) for d in vecs[1:]])
    for path in ("/v1/rerank", "/v2/rerank"):
        got = post(served, path, {"model": NAME, "query": query, "documents": documents})
        assert got.status_code == 200, got.text
        results = got.json()["results"]
        assert [r["index"] for r in results] == np.argsort(-expected, kind="stable").tolist()
        np.testing.assert_allclose([r["relevance_score"] for r in results], np.sort(expected)[::-1], atol=1e-5)
    tei = post(served, "/rerank", {"query": query, "texts": documents, "raw_scores": True}).json()
    np.testing.assert_allclose([x["score"] for x in sorted(tei, key=lambda x: x["index"])], expected, atol=1e-5)
    refused = post(
        served, "/v1/rerank", {"model": NAME, "query": query, "documents": documents, "max_tokens_per_doc": 8}
    )
    assert refused.status_code == 400 and "MaxSim" in refused.json()["error"]["message"]


def test_pooling_embed_is_the_embed_tasks_vector(stack) -> None:
    """`/pooling` with `embed` is the embed task itself (its checks and its vectors); vLLM's
    `truncate_prompt_tokens` takes only -1."""
    dense = post(stack, "/v1/embeddings", {"model": NAME, "input": TEXTS[:2]}).json()["data"]
    pooled = post(stack, "/pooling", {"model": NAME, "input": TEXTS[:2], "task": "embed", "truncate_prompt_tokens": -1})
    assert pooled.status_code == 200, pooled.text
    np.testing.assert_allclose([d["data"] for d in pooled.json()["data"]], [d["embedding"] for d in dense], atol=1e-6)
    cut = post(stack, "/pooling", {"model": NAME, "input": "x", "truncate_prompt_tokens": 8})
    assert cut.status_code == 400 and cut.json()["error"]["param"] == "truncate_prompt_tokens"

"""SPLADE through real Triton and the adapter (`/embed_sparse`), against sentence-transformers'
`SparseEncoder.encode` on a tiny random `BertForMaskedLM` with the real 30,522-id vocabulary, saved as
`SparseEncoder.save` writes it (and as sentence-transformers 5.0 wrote modules.json), on the `local`
and `torch` targets. The vocabulary-wide vector stays in the encoder's host: what crosses gRPC is each
row's non-zero entries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from export.build import Progress, export
from export.request import ExportRequest
from tests.conftest import target_stack
from tests.tiny.splade import splade

NAME = "splade-tiny"
TEXTS = [
    "what is splade?",
    "SPLADE expands a text over the vocabulary with an MLM head, then keeps the strongest weights.",
    "Ünïcödé, 中文 and emoji 🚀 appear in real traffic.",
    "sparse retrieval " * 300,  # over 512 tokens: cut at the end, as sentence-transformers cuts
]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("splade")
    return {"current": splade(root / "splade-tiny"), "legacy": splade(root / "splade-legacy", legacy=True)}


def serve(checkpoints: dict[str, Path], tmp_path_factory, target: str) -> Iterator:
    from launcher.stack import running_stack

    repo = tmp_path_factory.mktemp(f"splade-repo-{target}")
    export(ExportRequest(checkpoints["current"], repo, NAME, hf_id="naver/splade-v3", target=target), Progress())
    export(ExportRequest(checkpoints["legacy"], repo, "splade-legacy", target=target), Progress())
    with running_stack(repo, tmp_path_factory.mktemp(f"splade-stack-{target}")) as s:
        yield s


stack = target_stack(serve, "checkpoints", "local")
torch_stack = target_stack(serve, "checkpoints", "torch")


@pytest.fixture(scope="module")
def reference(checkpoints: dict[str, Path]) -> np.ndarray:
    from sentence_transformers import SparseEncoder

    encoder = SparseEncoder(str(checkpoints["current"]), device="cpu")
    return encoder.encode(TEXTS, convert_to_tensor=True).to_dense().float().numpy()


def post(stack, body: dict) -> httpx.Response:
    return httpx.post(f"{stack.adapter_url}/embed_sparse", json=body, timeout=120)


@pytest.mark.parametrize("model", [NAME, "splade-legacy"])
def test_sparse_vectors_match_sentence_transformers(served, reference, model) -> None:
    got = post(served, {"model": model, "inputs": TEXTS})
    assert got.status_code == 200, got.text
    for row, expected in zip(got.json(), reference, strict=True):
        indices = [e["index"] for e in row]
        assert indices == sorted(indices)
        assert indices == np.flatnonzero(expected).tolist()  # the same index set
        np.testing.assert_allclose([e["value"] for e in row], expected[indices], atol=1e-5)


def test_a_sparse_only_model_refuses_the_dense_routes(stack) -> None:
    listed = {m["id"]: m for m in httpx.get(f"{stack.adapter_url}/v1/models").json()["data"]}
    assert listed[NAME]["task"] == "sparse" and listed[NAME]["tasks"] == ["sparse"]
    wrong = httpx.post(f"{stack.adapter_url}/v1/embeddings", json={"model": NAME, "input": "x"}, timeout=60)
    assert wrong.status_code == 400
    assert "serves sparse, not embed: send it to /embed_sparse" in wrong.json()["error"]["message"]
    several = post(stack, {"inputs": "x"})  # two sparse models served: `model` picks one
    assert several.status_code == 400 and "model is required" in several.json()["error"]["message"]

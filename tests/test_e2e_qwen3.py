"""Qwen3-Embedding end to end through real Triton, against sentence-transformers' `encode` (its reference)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from export.build import Progress, export
from export.families.base import WEB_SEARCH_TASK
from export.request import ExportRequest
from tests.conftest import target_stack
from tests.tiny import qwen3

pytestmark = pytest.mark.e2e
MAX_LEN = 128
NAME = "qwen3-embedding"
DOCS = ["Bread needs flour, water, salt and yeast.", "Triton batches requests.", "中文 and emoji 🚀", "x"]
QUERIES = ["how to bake bread", "what does Triton do?"]
LONG = " ".join(f"word{i}" for i in range(400))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return qwen3.build(tmp_path_factory.mktemp("qwen3") / "Qwen3-Embedding-0.6B")


@pytest.fixture(scope="module")
def st(checkpoint):
    """The reference: sentence-transformers loading the same folder, cut to the served token limit."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(checkpoint), device="cpu")
    model.max_seq_length = MAX_LEN
    return model


def serve(checkpoint: Path, tmp_path_factory, target: str):
    from launcher.stack import running_stack

    repo = tmp_path_factory.mktemp(f"qwen3-repo-{target}")
    hf_id = "Qwen/Qwen3-Embedding-0.6B"
    export(ExportRequest(checkpoint, repo, NAME, hf_id=hf_id, max_length=MAX_LEN, target=target), Progress())
    with running_stack(repo, tmp_path_factory.mktemp(f"qwen3-stack-{target}")) as s:
        yield s


stack = target_stack(serve, "checkpoint", "local")
torch_stack = target_stack(serve, "checkpoint", "torch")


def post(stack, path: str, **body) -> httpx.Response:
    return httpx.post(f"{stack.adapter_url}{path}", json={"model": NAME, **body}, timeout=60)


def vectors(r: httpx.Response) -> np.ndarray:
    assert r.status_code == 200, r.text
    return np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)


def assert_parity(served: np.ndarray, reference: np.ndarray) -> None:
    cos = (served * reference).sum(axis=1) / np.linalg.norm(reference, axis=1)
    assert cos.min() >= 0.99999, cos


def test_documents_and_queries_match_sentence_transformers(served, st) -> None:
    stack = served
    docs = post(stack, "/v1/embeddings", input=DOCS)
    assert_parity(vectors(docs), st.encode(DOCS))
    tokens = st.tokenize(DOCS)["attention_mask"].sum()
    assert docs.json()["usage"]["prompt_tokens"] == int(tokens)
    queries = vectors(post(stack, "/v1/embeddings", input=QUERIES, input_type="query"))
    assert_parity(queries, st.encode(QUERIES, prompt_name="query"))
    task = "Retrieve semantically similar text."
    custom = vectors(post(stack, "/v1/embeddings", input=QUERIES, instruction=task))
    assert_parity(custom, st.encode(QUERIES, prompt=f"Instruct: {task}\nQuery:"))


def test_every_sequence_ends_with_one_endoftext(served, st) -> None:
    """The post-processor's <|endoftext|>, not the eos_token <|im_end|>, once; truncation keeps it."""
    stack = served
    tok = st.tokenizer
    end, im_end = tok.convert_tokens_to_ids("<|endoftext|>"), tok.convert_tokens_to_ids("<|im_end|>")
    r = post(stack, "/tokenize", input=["hello", LONG], input_type="query")
    short, long = r.json()["tokens"]
    prompt = tok(f"Instruct: {WEB_SEARCH_TASK}\nQuery:hello")["input_ids"]
    assert short == prompt and short[-1] == end and short.count(end) == 1 and im_end not in short
    assert len(long) == MAX_LEN and long[-1] == end and long.count(end) == 1
    assert_parity(vectors(post(stack, "/v1/embeddings", input=[LONG], truncate="END")), st.encode([LONG]))


def test_matryoshka_range_comes_from_the_contract(stack, st) -> None:
    card = httpx.get(f"{stack.adapter_url}/v1/models/{NAME}").json()
    full = card["dimension"]
    assert card["matryoshka_min_dimension"] == 32 and full == 64  # the tiny checkpoint's width
    reference = st.encode(DOCS)
    for dimensions in (32, full):
        served = vectors(post(stack, "/v1/embeddings", input=DOCS, dimensions=dimensions))
        cut = reference[:, :dimensions] / np.linalg.norm(reference[:, :dimensions], axis=1, keepdims=True)
        assert served.shape == (len(DOCS), dimensions)
        assert_parity(served, cut)
    refused = post(stack, "/v1/embeddings", input=DOCS, dimensions=16)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "dimensions"
    assert "32–64" in refused.json()["error"]["message"]


def test_tokenize_ids_round_trip(stack) -> None:
    from tests.conftest import assert_token_ids_round_trip

    assert_token_ids_round_trip(stack.adapter_url, NAME, "a photo of a cat")
    assert_token_ids_round_trip(stack.adapter_url, NAME, "bake bread", input_type="query")

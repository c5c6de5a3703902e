"""Cross-encoder rerankers through real Triton and the adapter, against the model cards' recipe:
`tokenizer(pairs, padding=True, truncation=True, max_length=512)`, `model(**inputs).logits.view(-1)`,
and sentence-transformers' `CrossEncoder.predict` (the sigmoid of that logit). A BERT reranker (token
types) and an XLM-R one (bge-reranker-v2-m3's head), tiny and random; the Cohere SDK (v1 and v2
clients), the TEI shape, and the errors."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest

from export.build import Progress, export
from export.families.qwen3_reranker import PROMPT
from export.request import ExportRequest
from tests.conftest import target_stack
from tests.tiny.cross_encoder import bert_reranker, xlmr_reranker
from tests.tiny.qwen3_reranker import qwen3_reranker

QUERY = "how does Triton serve a reranker?"
DOCUMENTS = [
    "Triton runs an ensemble: a preprocessor tokenises the pair, an encoder scores it.",
    "The quick brown fox jumps over the lazy dog.",
    "Ünïcödé, 中文 and emoji 🚀 appear in real traffic.",
    "Rerankers read the query and the document together. " * 80,  # over 512 tokens with the query: cut
    "bread",
]
MODELS = {
    "ms-marco-tiny": (bert_reranker, "cross-encoder/ms-marco-MiniLM-L6-v2"),
    "bge-reranker-tiny": (xlmr_reranker, "BAAI/bge-reranker-v2-m3"),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rerankers")
    built = {name: build(root / name) for name, (build, _) in MODELS.items()}
    return {**built, "qwen3-reranker-tiny": qwen3_reranker(root / "qwen3-reranker")}


def serve(checkpoints: dict[str, Path], tmp_path_factory, target: str) -> Iterator:
    from launcher.stack import running_stack

    repo = tmp_path_factory.mktemp(f"rerank-repo-{target}")
    for name in MODELS:
        export(ExportRequest(checkpoints[name], repo, name, hf_id=MODELS[name][1], target=target), Progress())
    qwen3 = ExportRequest(
        checkpoints["qwen3-reranker-tiny"], repo, "qwen3-reranker-tiny", task="rerank", max_length=QWEN3_LENGTH
    )
    export(replace(qwen3, target=target), Progress())
    workdir = tmp_path_factory.mktemp(f"rerank-stack-{target}")
    with running_stack(repo, workdir, "--max-documents-per-request", "200") as s:
        yield s


stack = target_stack(serve, "checkpoints", "local")
torch_stack = target_stack(serve, "checkpoints", "torch")


def reference(path: Path, query: str, documents: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The model card's recipe: raw logits, and the token count of each pair."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
    inputs = tokenizer(
        [[query, d] for d in documents], padding=True, truncation=True, max_length=512, return_tensors="pt"
    )
    with torch.no_grad():
        logits = model(**inputs).logits.view(-1).float().numpy()
    return logits.astype(np.float64), inputs["attention_mask"].sum(dim=1).numpy()


QWEN3_LENGTH = 256  # the README's `max_length` (8,192 for the real models), small enough to cut the long document


def qwen3_reference(path: Path, query: str, documents: list[str], instruction: str | None = None):
    """Qwen3-Reranker's README, transformers example: the prompt, `truncation='longest_first'` to the room
    the prefix and suffix leave, left padding, softmax of the last position's no/yes logits. Returns the
    probabilities, the yes − no logits, and the token counts."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(str(path)).eval()
    no, yes = tokenizer.convert_tokens_to_ids("no"), tokenizer.convert_tokens_to_ids("yes")
    prefix = tokenizer.encode(PROMPT.prefix, add_special_tokens=False)
    suffix = tokenizer.encode(PROMPT.suffix, add_special_tokens=False)
    task = instruction or PROMPT.default_instruction
    pairs = [f"<Instruct>: {task}\n<Query>: {query}\n<Document>: {d}" for d in documents]
    room = QWEN3_LENGTH - len(prefix) - len(suffix)
    inputs = tokenizer(pairs, padding=False, truncation="longest_first", return_attention_mask=False, max_length=room)
    inputs["input_ids"] = [prefix + ids + suffix for ids in inputs["input_ids"]]
    inputs = tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=QWEN3_LENGTH)
    with torch.no_grad():
        last = model(**inputs).logits[:, -1, :]
    pair = torch.nn.functional.log_softmax(torch.stack([last[:, no], last[:, yes]], dim=1), dim=1)
    probabilities = pair[:, 1].exp().double().numpy()
    return probabilities, (last[:, yes] - last[:, no]).double().numpy(), inputs["attention_mask"].sum(dim=1).numpy()


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def post(stack, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{stack.adapter_url}{path}", json=body, timeout=60)


@pytest.mark.parametrize("name", list(MODELS))
def test_scores_order_and_tokens_equal_the_model_cards_recipe(served, checkpoints, name: str) -> None:
    stack = served
    raw, counts = reference(checkpoints[name], QUERY, DOCUMENTS)
    for raw_scores in (False, True):
        r = post(stack, "/v1/rerank", {"model": name, "query": QUERY, "documents": DOCUMENTS, "raw_scores": raw_scores})
        assert r.status_code == 200, r.text
        body = r.json()
        expected = raw if raw_scores else sigmoid(raw)
        served = {x["index"]: x["relevance_score"] for x in body["results"]}
        assert max(abs(served[i] - expected[i]) for i in range(len(DOCUMENTS))) <= 1e-5, (served, expected)
        assert [x["index"] for x in body["results"]] == np.argsort(-raw, kind="stable").tolist()
        assert body["usage"] == {"prompt_tokens": int(counts.sum()), "total_tokens": int(counts.sum())}
        assert body["model"] == name and "document" not in body["results"][0]


@pytest.mark.parametrize("name", list(MODELS))
def test_nim_ranking_and_vllm_score_give_the_recipes_scores(served, checkpoints, name: str) -> None:
    """NIM's /v1/ranking returns the logits best first; vLLM's /score the relevance score (sigmoid) per pair."""
    raw, counts = reference(checkpoints[name], QUERY, DOCUMENTS)
    nim = post(
        served, "/v1/ranking", {"model": name, "query": {"text": QUERY}, "passages": [{"text": d} for d in DOCUMENTS]}
    )
    assert nim.status_code == 200, nim.text
    rankings = nim.json()["rankings"]
    assert [r["index"] for r in rankings] == np.argsort(-raw, kind="stable").tolist()
    np.testing.assert_allclose([r["logit"] for r in rankings], raw[[r["index"] for r in rankings]], atol=1e-5)
    refused = post(
        served,
        "/v1/ranking",
        {"model": name, "query": {"text": QUERY}, "passages": [{"text": DOCUMENTS[3]}], "truncate": "NONE"},
    )
    assert refused.status_code == 400, refused.text  # over-long pair, NONE
    scored = post(served, "/score", {"model": name, "text_1": QUERY, "text_2": DOCUMENTS})
    assert scored.status_code == 200, scored.text
    np.testing.assert_allclose([d["score"] for d in scored.json()["data"]], sigmoid(raw), atol=1e-5)
    assert scored.json()["usage"]["prompt_tokens"] == int(counts.sum())


@pytest.mark.parametrize("name", list(MODELS))
def test_sentence_transformers_cross_encoder_agrees(served, checkpoints, name: str) -> None:
    from sentence_transformers import CrossEncoder

    stack = served
    predicted = CrossEncoder(str(checkpoints[name]), max_length=512).predict([[QUERY, d] for d in DOCUMENTS])
    body = post(stack, "/v1/rerank", {"model": MODELS[name][1], "query": QUERY, "documents": DOCUMENTS}).json()
    served = sorted(body["results"], key=lambda x: x["index"])
    assert np.abs(np.array([x["relevance_score"] for x in served]) - predicted).max() <= 1e-5


@pytest.mark.filterwarnings("ignore:`max_length` is ignored")  # the README's own `tokenizer.pad` call
@pytest.mark.parametrize("instruction", [None, "Judge whether the document is about serving models"])
def test_qwen3_reranker_equals_its_readme_recipe(served, checkpoints, instruction: str | None) -> None:
    stack = served
    probabilities, logits, counts = qwen3_reference(checkpoints["qwen3-reranker-tiny"], QUERY, DOCUMENTS, instruction)
    body = {"model": "qwen3-reranker-tiny", "query": QUERY, "documents": DOCUMENTS}
    if instruction is not None:
        body["instruction"] = instruction
    for raw, expected in ((False, probabilities), (True, logits)):
        r = post(stack, "/v1/rerank", {**body, "raw_scores": raw})
        assert r.status_code == 200, r.text
        served = {x["index"]: x["relevance_score"] for x in r.json()["results"]}
        assert max(abs(served[i] - expected[i]) for i in range(len(DOCUMENTS))) <= 1e-5, (served, expected)
        assert [x["index"] for x in r.json()["results"]] == np.argsort(-logits, kind="stable").tolist()
        assert r.json()["usage"]["prompt_tokens"] == int(counts.sum())
    cut = post(stack, "/v1/rerank", {**body, "max_tokens_per_doc": 8})
    assert cut.status_code == 400 and "max_tokens_per_doc" in cut.json()["error"]["message"]
    refused = post(stack, "/v1/rerank", {**body, "truncate": "NONE"})
    assert refused.status_code == 400 and "documents[3]" in refused.json()["error"]["message"]


def test_top_n_return_documents_and_object_documents(stack) -> None:
    documents = [DOCUMENTS[0], {"text": DOCUMENTS[1]}, DOCUMENTS[4]]
    full = post(stack, "/v1/rerank", {"model": "ms-marco-tiny", "query": QUERY, "documents": documents}).json()
    r = post(
        stack,
        "/v1/rerank",
        {"model": "ms-marco-tiny", "query": QUERY, "documents": documents, "top_n": 2, "return_documents": True},
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["index"] for x in results] == [x["index"] for x in full["results"][:2]]
    texts = [DOCUMENTS[0], DOCUMENTS[1], DOCUMENTS[4]]
    assert [x["document"]["text"] for x in results] == [texts[x["index"]] for x in results]


def test_a_large_request_is_split_and_reassembled_in_order(stack, checkpoints) -> None:
    """150 documents over a max batch of 64: three calls, every score in its place."""
    documents = [f"document {i}: " + DOCUMENTS[i % 5][:200] for i in range(150)]
    raw, _ = reference(checkpoints["bge-reranker-tiny"], QUERY, documents)
    body = post(stack, "/v1/rerank", {"model": "bge-reranker-tiny", "query": QUERY, "documents": documents}).json()
    served = {x["index"]: x["relevance_score"] for x in body["results"]}
    assert np.abs(np.array([served[i] for i in range(150)]) - sigmoid(raw)).max() <= 1e-5


def test_concurrent_requests_each_get_their_own_scores(stack, checkpoints) -> None:
    """Pairs of concurrent requests share Triton calls (each row carries its own query)."""
    queries = [f"question {i}: {QUERY}" for i in range(8)]

    async def run() -> list[dict]:
        async with httpx.AsyncClient(timeout=60) as client:
            calls = [
                client.post(
                    f"{stack.adapter_url}/v1/rerank",
                    json={"model": "ms-marco-tiny", "query": q, "documents": DOCUMENTS},
                )
                for q in queries
            ]
            return [r.json() for r in await asyncio.gather(*calls)]

    for query, body in zip(queries, asyncio.run(run()), strict=True):
        raw, _ = reference(checkpoints["ms-marco-tiny"], query, DOCUMENTS)
        served = {x["index"]: x["relevance_score"] for x in body["results"]}
        assert np.abs(np.array([served[i] for i in range(len(DOCUMENTS))]) - sigmoid(raw)).max() <= 1e-5


def test_max_tokens_per_doc_cuts_each_document_first(stack, checkpoints) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoints["ms-marco-tiny"]))
    cut = [tokenizer.decode(tokenizer(d, add_special_tokens=False)["input_ids"][:8]) for d in DOCUMENTS]
    raw, _ = reference(checkpoints["ms-marco-tiny"], QUERY, cut)
    body = post(
        stack, "/v2/rerank", {"model": "ms-marco-tiny", "query": QUERY, "documents": DOCUMENTS, "max_tokens_per_doc": 8}
    ).json()
    served = {x["index"]: x["relevance_score"] for x in body["results"]}
    assert np.abs(np.array([served[i] for i in range(len(DOCUMENTS))]) - sigmoid(raw)).max() <= 1e-5


def test_the_cohere_sdk_v1_and_v2_clients_work_unchanged(stack) -> None:
    import cohere

    v1 = cohere.Client(base_url=stack.adapter_url, api_key="unused")
    first = v1.rerank(model="ms-marco-tiny", query=QUERY, documents=DOCUMENTS, top_n=3, return_documents=True)
    assert len(first.results) == 3 and first.results[0].document.text in DOCUMENTS
    v2 = cohere.ClientV2(base_url=stack.adapter_url, api_key="unused")
    second = v2.rerank(model="ms-marco-tiny", query=QUERY, documents=DOCUMENTS, top_n=3)
    assert [r.index for r in second.results] == [r.index for r in first.results]
    assert all(
        math.isclose(a.relevance_score, b.relevance_score) for a, b in zip(first.results, second.results, strict=True)
    )


def test_the_tei_shape(stack, checkpoints) -> None:
    raw, _ = reference(checkpoints["bge-reranker-tiny"], QUERY, DOCUMENTS)
    r = post(
        stack,
        "/rerank",
        {"query": QUERY, "texts": DOCUMENTS, "raw_scores": True, "return_text": True, "model": "bge-reranker-tiny"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body, list) and [x["index"] for x in body] == np.argsort(-raw, kind="stable").tolist()
    assert all(abs(x["score"] - raw[x["index"]]) <= 1e-5 and x["text"] == DOCUMENTS[x["index"]] for x in body)
    refused = post(
        stack, "/rerank", {"query": QUERY, "texts": DOCUMENTS, "truncate": False, "model": "bge-reranker-tiny"}
    )
    assert refused.status_code == 400 and "documents[3]" in refused.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (
            {"model": "ms-marco-tiny", "query": QUERY, "documents": DOCUMENTS, "truncate": "NONE"},
            400,
            "documents[3] has",
        ),
        ({"model": "ms-marco-tiny", "query": " ", "documents": DOCUMENTS}, 400, "query cannot be empty"),
        ({"model": "ms-marco-tiny", "query": QUERY, "documents": []}, 400, "documents cannot be an empty list"),
        ({"model": "ms-marco-tiny", "query": QUERY, "documents": ["a", ""]}, 400, "documents[1] cannot be empty"),
        ({"model": "ms-marco-tiny", "query": QUERY, "documents": ["a"] * 201}, 413, "the maximum is 200"),
        (
            {"model": "ms-marco-tiny", "query": QUERY, "documents": ["a"], "instruction": "x"},
            400,
            "takes no instruction",
        ),
        ({"model": "ms-marco-tiny", "query": QUERY, "documents": ["a"], "top_n": 0}, 400, "top_n"),
        ({"query": QUERY, "documents": ["a"]}, 400, "model is required"),
        ({"model": "nope", "query": QUERY, "documents": ["a"]}, 404, "nope"),
    ],
)
def test_bad_requests_get_openai_errors(stack, body: dict, status: int, says: str) -> None:
    r = post(stack, "/v1/rerank", body)
    assert r.status_code == status and says in r.json()["error"]["message"], r.text


def test_an_embedding_request_to_a_reranker_is_refused(stack) -> None:
    r = post(stack, "/v1/embeddings", {"model": "ms-marco-tiny", "input": "a cat"})
    assert r.status_code == 400 and "/v1/rerank" in r.json()["error"]["message"]
    listed = httpx.get(f"{stack.adapter_url}/v1/models").json()["data"]
    assert {m["id"]: m["task"] for m in listed} == dict.fromkeys([*MODELS, "qwen3-reranker-tiny"], "rerank")
    metrics = httpx.get(f"{stack.adapter_url}/metrics").text
    assert 'route="rerank"' in metrics


def test_tritonclient_example(stack, checkpoints) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    script = str(root / "client" / "examples" / "tritonclient_rerank.py")
    args = ["--url", stack.grpc_url, "--model", "ms-marco-tiny", "--query", QUERY, DOCUMENTS[0], DOCUMENTS[1]]
    out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=60, check=True)
    raw, _ = reference(checkpoints["ms-marco-tiny"], QUERY, DOCUMENTS[:2])
    best = int(np.argmax(raw))
    first = out.stdout.splitlines()[0]
    assert first.startswith(f"{sigmoid(raw)[best]:.6f}") and repr(DOCUMENTS[best]) in first

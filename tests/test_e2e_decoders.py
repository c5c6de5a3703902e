"""e5-mistral- and gte-Qwen2-shaped decoders end to end, against a reference written from the model cards."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from export.build import Progress, export
from export.checkpoint import plan
from export.request import ExportRequest
from runtime.text import encode, frame_all
from tests import tiny
from tests.conftest import target_stack

pytestmark = pytest.mark.e2e
MAX_LEN = 128
TASK = "Given a web search query, retrieve relevant passages that answer the query"
DOCS = ["Bread needs flour, water, salt and yeast.", "Triton batches requests.", "中文 and emoji 🚀", "x"]
QUERIES = ["how to bake bread", "what does Triton do?"]


def last_token_pool(last_hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The model cards' pooling (e5-mistral-7b-instruct and gte-Qwen2-7B-instruct), verbatim in behaviour."""
    left_padding = attention_mask[:, -1].sum() == attention_mask.shape[0]
    if left_padding:
        return last_hidden_states[:, -1]
    sequence_lengths = attention_mask.sum(dim=1) - 1
    return last_hidden_states[torch.arange(last_hidden_states.shape[0]), sequence_lengths]


def card_reference(
    checkpoint: Path, texts: list[str], causal: bool, side: str = "right", truncation_side: str = "right"
) -> tuple[np.ndarray, list[int]]:
    """The cards' recipe: tokenize to max_length - 1, append EOS by hand, pad, last-token pool, L2-normalise."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(checkpoint))
    tok.padding_side, tok.truncation_side = side, truncation_side
    model = AutoModel.from_pretrained(str(checkpoint), dtype=torch.float32).eval()
    model.config.is_causal = causal
    batch = tok(texts, max_length=MAX_LEN - 1, return_attention_mask=False, padding=False, truncation=True)
    batch["input_ids"] = [ids + [tok.eos_token_id] for ids in batch["input_ids"]]
    lengths = [len(ids) for ids in batch["input_ids"]]
    batch = tok.pad(batch, padding=True, return_attention_mask=True, return_tensors="pt")
    with torch.inference_mode():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    emb = torch.nn.functional.normalize(last_token_pool(out.last_hidden_state, batch["attention_mask"]), p=2, dim=1)
    return emb.numpy(), lengths


def instruct(task: str, query: str) -> str:
    return f"Instruct: {task}\nQuery: {query}"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-decoders")
    return {
        "e5": tiny.mistral(root / "e5-mistral-7b-instruct"),
        "gte": tiny.qwen2(root / "gte-Qwen2-7B-instruct", gte=True),
    }


def serve(checkpoints: dict[str, Path], tmp_path_factory, target: str):
    from launcher.stack import running_stack

    repo = tmp_path_factory.mktemp(f"decoder-repo-{target}")
    for key, hf_id, external in (
        ("e5", "intfloat/e5-mistral-7b-instruct", True),
        ("gte", "Alibaba-NLP/gte-Qwen2-7B-instruct", False),
    ):
        name = checkpoints[key].name
        export(
            ExportRequest(
                checkpoint=checkpoints[key],
                repository=repo,
                name=name,
                hf_id=hf_id,
                max_length=MAX_LEN,
                external_data=external if target == "local" else None,
                target=target,
            ),
            Progress(),
        )
    with running_stack(repo, tmp_path_factory.mktemp(f"decoder-stack-{target}")) as s:
        yield s


stack = target_stack(serve, "checkpoints", "local")
torch_stack = target_stack(serve, "checkpoints", "torch")


def embed(stack, model: str, texts, **fields) -> httpx.Response:
    return httpx.post(f"{stack.adapter_url}/v1/embeddings", json={"model": model, "input": texts, **fields}, timeout=60)


def vectors(r: httpx.Response) -> np.ndarray:
    assert r.status_code == 200, r.text
    return np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)


def assert_parity(served: np.ndarray, reference: np.ndarray) -> None:
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)
    cos = (served * reference).sum(axis=1)
    assert cos.min() >= 0.99999, cos


MODELS = [("e5", "e5-mistral-7b-instruct", True), ("gte", "gte-Qwen2-7B-instruct", False)]


@pytest.mark.parametrize(("key", "alias", "causal"), MODELS)
def test_documents_queries_and_custom_instructions_match_the_card(served, checkpoints, key, alias, causal) -> None:
    stack, ckpt = served, checkpoints[key]
    docs = embed(stack, alias, DOCS)
    expected, lengths = card_reference(ckpt, DOCS, causal)
    assert_parity(vectors(docs), expected)
    assert docs.json()["usage"]["prompt_tokens"] == sum(lengths)
    queries = vectors(embed(stack, alias, QUERIES, input_type="query"))
    assert_parity(queries, card_reference(ckpt, [instruct(TASK, q) for q in QUERIES], causal)[0])
    task = "Retrieve semantically similar text."
    custom = vectors(embed(stack, alias, QUERIES, input_type="query", instruction=task))
    assert_parity(custom, card_reference(ckpt, [instruct(task, q) for q in QUERIES], causal)[0])
    # Left padding in the reference gives the same vectors (pooling is padding-side agnostic).
    assert_parity(vectors(docs), card_reference(ckpt, DOCS, causal, side="left")[0])


@pytest.mark.parametrize(("key", "alias", "causal"), MODELS)
def test_padding_never_changes_a_row(stack, key, alias, causal) -> None:
    texts = ["short", "a much longer document " * 8, "mid length text here"]
    batch = vectors(embed(stack, alias, texts))
    for i, text in enumerate(texts):
        assert float(vectors(embed(stack, alias, text))[0] @ batch[i]) >= 0.999999


@pytest.mark.parametrize(("key", "alias", "causal"), MODELS)
def test_truncation_modes_at_the_length_limit(served, checkpoints, key, alias, causal) -> None:
    stack = served
    long_text = " ".join(f"word{i}" for i in range(400))
    for mode, side in (("END", "right"), ("START", "left")):
        r = embed(stack, alias, [long_text, "short"], truncate=mode)
        expected, lengths = card_reference(checkpoints[key], [long_text, "short"], causal, truncation_side=side)
        assert lengths[0] == MAX_LEN
        assert_parity(vectors(r), expected)
        assert r.json()["usage"]["prompt_tokens"] == sum(lengths)
    r = embed(stack, alias, ["short", long_text], truncate="NONE")
    assert r.status_code == 400
    assert (
        f"the maximum is {MAX_LEN}" in r.json()["error"]["message"] and "input[1] has" in r.json()["error"]["message"]
    )


def test_gte_is_bidirectional_and_e5_causal(served, checkpoints) -> None:
    """The served gte vectors are the bidirectional ones, not what a causal run (SGLang's) gives."""
    stack = served
    gte = vectors(embed(stack, "Alibaba-NLP/gte-Qwen2-7B-instruct", DOCS[:2]))
    causal = card_reference(checkpoints["gte"], DOCS[:2], causal=True)[0]
    assert (gte * causal).sum(axis=1).max() < 0.999
    e5 = vectors(embed(stack, "intfloat/e5-mistral-7b-instruct", DOCS[:2]))
    bidirectional = card_reference(checkpoints["e5"], DOCS[:2], causal=False)[0]
    assert (e5 * bidirectional).sum(axis=1).max() < 0.999


def test_sequences_end_in_eos_even_where_the_tokenizer_drops_it(checkpoints) -> None:
    """transformers ≥ 5 drops e5's </s>; the served framing adds it explicitly."""
    from transformers import AutoTokenizer

    for key in ("e5", "gte"):
        p = plan(checkpoints[key])
        hf = AutoTokenizer.from_pretrained(str(checkpoints[key]))
        assert hf("hello")["input_ids"][-1] != hf.eos_token_id  # the pitfall is real in these tokenizers
        rows = frame_all(encode(p.tokenizer, ["hello", "x " * 1000]), p.layout, "END")
        assert all(r[-1] == hf.eos_token_id for r in rows)
        assert rows[0][0] == (hf.bos_token_id if key == "e5" else rows[0][0])


def test_the_torch_target_serves_the_pytorch_graph_from_the_weights(torch_stack) -> None:
    """No ONNX file: each host builds its graph from the weights beside it (hard links, not copies)."""
    for name in ("e5-mistral-7b-instruct", "gte-Qwen2-7B-instruct"):
        version = torch_stack.repository / f"{name}_encoder" / "1"
        assert not list(version.glob("model.onnx*"))
        assert (version / "checkpoint" / "config.json").is_file() and (version / "graphs" / "__init__.py").is_file()
        assert (version / "checkpoint" / "model.safetensors").stat().st_nlink == 2


def test_external_data_and_instruction_errors(stack) -> None:
    assert list(stack.repository.glob("e5-mistral-7b-instruct_encoder/1/model.onnx.data"))
    assert not list(stack.repository.glob("gte-Qwen2-7B-instruct_encoder/1/model.onnx.data"))
    r = embed(stack, "e5-mistral-7b-instruct", ["q"], input_type="document", instruction="x")
    assert r.status_code == 400 and r.json()["error"]["param"] == "instruction"
    r = embed(stack, "e5-mistral-7b-instruct", ["q"], input_type="passage")
    assert r.status_code == 400 and r.json()["error"]["param"] == "input_type"


def test_models_listed_with_ids_and_aliases(stack) -> None:
    data = httpx.get(f"{stack.adapter_url}/v1/models").json()["data"]
    assert {m["id"]: m["hf_id"] for m in data} == {  # the served name, the Hugging Face id beside it
        "e5-mistral-7b-instruct": "intfloat/e5-mistral-7b-instruct",
        "gte-Qwen2-7B-instruct": "Alibaba-NLP/gte-Qwen2-7B-instruct",
    }
    assert all(m["query_template"] is True for m in data)
    assert all(m["max_tokens"] == MAX_LEN and m["dimension"] == 64 for m in data)


@pytest.mark.parametrize("model", ["e5-mistral-7b-instruct", "gte-Qwen2-7B-instruct"])
def test_tokenize_ids_round_trip(stack, model) -> None:
    """Documents, queries with the default task and with their own: the template is in the ids."""
    from tests.conftest import assert_token_ids_round_trip

    assert_token_ids_round_trip(stack.adapter_url, model, "how do I bake bread")
    assert_token_ids_round_trip(stack.adapter_url, model, "how do I bake bread", input_type="query")
    assert_token_ids_round_trip(stack.adapter_url, model, "bread", input_type="query", instruction="Find recipes")

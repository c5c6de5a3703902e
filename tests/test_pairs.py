"""Pair tokenisation against the reference: Hugging Face's `tokenizer(query, document, truncation=True,
max_length=N)` (the model cards' recipe), id for id and token type for token type, for a WordPiece
BERT tokenizer (`[CLS] q [SEP] d [SEP]`, types 0/1) and a byte-level BPE XLM-R one (`<s> q </s></s> d </s>`,
no types), including texts long enough that only a bounded part of them is tokenised."""

from __future__ import annotations

from pathlib import Path

import pytest

from export.towers.pair import pair_frame
from launcher import default_model
from runtime.errors import InputError
from runtime.pairs import PairLayout, encode_pairs, kept_lengths
from runtime.text import cut_length, load_tokenizer, make_buckets, pad

LONG = "Triton serves embeddings; ONNX Runtime runs them on the CPU. "
CASES = [
    ("a cat", "The quick brown fox jumps over the lazy dog."),
    ("which engines does Triton serve? " * 40, "ONNX Runtime."),  # the query is the longer one
    ("what is triton", LONG * 60),  # the document is cut
    (LONG * 30, LONG * 31),  # both over half the room: the odd token goes to the longer
    (LONG * 31, LONG * 30),
    (LONG * 30, LONG * 30),  # equal: the first keeps the floor of half
    ("q", "word " * 8000),  # far beyond the cut: only a bounded part is tokenised
    ("word " * 600, "word " * 8000),  # both cut, the query longer than the room
    ("Ünïcödé 中文 🚀", "日本語 " * 3000),
    ("spaces", " \n\t " * 500 + "end"),  # mostly whitespace, within the sparse limit: the cut grows, exact
    ("what is [SEP] or </s>?", "a document holding [SEP] and </s> as text"),
    ("", "an empty query"),
]


@pytest.fixture(scope="module", params=["bert", "xlmr"])
def tokenizers(request, tmp_path_factory):
    from transformers import AutoTokenizer

    if request.param == "bert":
        path = default_model.checkpoint()
    else:
        from tests.tiny.cross_encoder import xlmr_reranker

        path = xlmr_reranker(tmp_path_factory.mktemp("xlmr") / "xlmr")
    hf = AutoTokenizer.from_pretrained(str(path))
    return hf, load_tokenizer(str(Path(path) / "tokenizer.json"))


def layout_of(hf, tok, max_length: int) -> PairLayout:
    frame = pair_frame(hf, tok)
    return PairLayout(
        frame.prefix_ids, frame.middle_ids, frame.suffix_ids, frame.second_type, max_length, 0, make_buckets(max_length)
    )


def reference(hf, query: str, document: str, max_length: int, side: str = "right") -> tuple[list[int], list[int]]:
    hf.truncation_side = side
    try:
        encoded = hf(query, document, truncation=True, max_length=max_length)
    finally:
        hf.truncation_side = "right"
    ids = list(encoded["input_ids"])
    return ids, list(encoded.get("token_type_ids") or [0] * len(ids))


@pytest.mark.parametrize("max_length", [512, 65])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_pairs_equal_the_tokenizers_own(tokenizers, case: int, max_length: int) -> None:
    hf, tok = tokenizers
    query, document = CASES[case]
    layout = layout_of(hf, tok, max_length)
    for mode, side in (("END", "right"), ("START", "left")):
        ((ids, types),) = encode_pairs(tok, [query], [document], layout, mode)
        assert (ids, types) == reference(hf, query, document, max_length, side), (case, mode)


def test_bert_pairs_carry_token_types_and_xlmr_pairs_none(tokenizers) -> None:
    hf, tok = tokenizers
    frame = pair_frame(hf, tok)
    if frame.types:
        assert (frame.prefix_ids, frame.middle_ids, frame.suffix_ids, frame.second_type) == ((101,), (102,), (102,), 1)
    else:
        assert (frame.prefix_ids, frame.middle_ids, frame.suffix_ids, frame.second_type) == ((0,), (2, 2), (2,), 0)


@pytest.fixture(scope="module")
def bert():
    from transformers import AutoTokenizer

    path = default_model.checkpoint()
    return AutoTokenizer.from_pretrained(str(path)), load_tokenizer(str(path / "tokenizer.json"))


@pytest.mark.parametrize("room", [7, 8])
def test_kept_lengths_equal_longest_first_on_a_grid(bert, room: int) -> None:
    """Every split of up to 12 + 12 tokens, against the tokenizer's own truncation. (An empty document is
    no pair to Hugging Face, which frames the query alone: the adapter refuses empty documents.)"""
    hf, tok = bert
    layout = layout_of(hf, tok, room + 3)
    for n1 in range(13):
        for n2 in range(1, 13):
            q, d = "a " * n1, "b " * n2
            ((ids, _),) = encode_pairs(tok, [q], [d], layout, "END")
            assert ids == reference(hf, q, d, room + 3)[0], (n1, n2)
            k1, k2 = kept_lengths(n1, n2, room)
            assert len(ids) == 3 + k1 + k2


def test_a_long_text_is_tokenised_only_as_far_as_truncation_can_keep(tokenizers, monkeypatch) -> None:
    hf, tok = tokenizers
    layout = layout_of(hf, tok, 512)
    seen: list[int] = []
    original = tok.encode_batch

    class Spy:
        def __getattr__(self, name):
            return getattr(tok, name)

        def encode_batch(self, texts, **kw):
            seen.extend(len(t) for t in texts)
            return original(texts, **kw)

    encode_pairs(Spy(), ["q"], ["word " * 200_000], layout, "END")
    assert max(seen) <= cut_length(layout.room)


def test_truncate_none_refuses_naming_the_row(tokenizers) -> None:
    hf, tok = tokenizers
    layout = layout_of(hf, tok, 64)
    with pytest.raises(InputError, match=r"input\[1\] has more than \d+ tokens with the query; the maximum is 64"):
        encode_pairs(tok, ["q", "q"], ["fine", "word " * 8000], layout, "NONE")
    ((ids, _),) = encode_pairs(tok, ["q"], ["word " * 62], layout, "END")
    exact = len(tok.encode("q", add_special_tokens=False).ids) + len(
        tok.encode("word " * 62, add_special_tokens=False).ids
    )
    with pytest.raises(InputError, match=rf"input\[0\] has {exact + 64 - layout.room} tokens with the query"):
        encode_pairs(tok, ["q"], ["word " * 62], layout, "NONE")
    assert len(encode_pairs(tok, ["q"], ["word " * 5], layout, "NONE")[0][0]) < 64


def test_max_tokens_per_doc_cuts_the_document_first(tokenizers) -> None:
    """Cohere's `max_tokens_per_doc`: the document alone is cut, then the pair as the recipe cuts it."""
    hf, tok = tokenizers
    layout = layout_of(hf, tok, 512)
    document = "word " * 100
    cut = tok.decode(tok.encode(document, add_special_tokens=False).ids[:10])
    ((ids, types),) = encode_pairs(tok, ["a query"], [document], layout, "END", max_doc_tokens=10)
    assert (ids, types) == reference(hf, "a query", cut, 512)
    ((none_ids, _),) = encode_pairs(tok, ["q"], ["word " * 1000], layout, "NONE", max_doc_tokens=10)
    assert len(none_ids) < 30  # within the limit once cut: NONE does not refuse it


def test_pairs_pad_to_a_bucket_with_their_types() -> None:
    layout = PairLayout((101,), (102,), (102,), 1, 64, 0, make_buckets(64))
    batch = pad([[101, 5, 102, 6, 7, 102], [101, 5, 102, 6, 102]], layout, [[0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1]])
    assert batch.input_ids.shape == (2, 16) and batch.token_count.ravel().tolist() == [6, 5]
    assert batch.token_type_ids[0, :7].tolist() == [0, 0, 0, 1, 1, 1, 0]
    assert batch.attention_mask.sum(axis=1).tolist() == [6, 5]


def test_a_query_beside_many_documents_is_tokenised_once(tokenizers) -> None:
    hf, tok = tokenizers
    layout = layout_of(hf, tok, 512)
    seen: list[str] = []
    original = tok.encode_batch

    class Spy:
        def __getattr__(self, name):
            return getattr(tok, name)

        def encode_batch(self, texts, **kw):
            seen.extend(texts)
            return original(texts, **kw)

    documents = [f"document {i}" for i in range(32)]
    rows = encode_pairs(Spy(), ["the query"] * 32, documents, layout, "END")
    assert seen.count("the query") == 1
    assert rows == [reference(hf, "the query", d, 512) for d in documents]


def test_a_sparse_document_is_refused_with_truncate_none(tokenizers) -> None:
    """A document cut by characters (too sparse to tokenise whole) was kept, cut, under `truncate: NONE`."""
    from runtime.text import SparseCut, encode_bounded, sparse_limit

    hf, tok = tokenizers
    layout = layout_of(hf, tok, 64)
    sparse = " " * (sparse_limit(layout.room) + 10) + "end"
    (cut,) = encode_bounded(tok, [sparse], ["END"], layout.room)
    # WordPiece makes no token of whitespace: a cut by characters; the tiny XLM-R's BPE makes tokens of
    # it: simply too long. Either way NONE refuses it, naming its row.
    expected = r"\d+ characters and only" if isinstance(cut, SparseCut) else "more than 65 tokens with the query"
    assert isinstance(cut, SparseCut) == (hf.model_input_names.count("token_type_ids") == 1)
    with pytest.raises(InputError, match=rf"input\[1\] has {expected}"):
        encode_pairs(tok, ["q", "q"], ["fine", sparse], layout, "NONE")
    ((ids, _),) = encode_pairs(tok, ["q"], [sparse], layout, "END")
    assert len(ids) <= 64  # cut to the limit where it may be cut

"""Unit tests of the pure tokenisation functions in runtime/text.py."""

from __future__ import annotations

import numpy as np
import pytest

from launcher import default_model
from runtime.errors import InputError
from runtime.text import (
    TextLayout,
    bucket_for,
    encode,
    frame,
    frame_all,
    load_tokenizer,
    make_buckets,
    pad,
    special_token_frame,
)

LAYOUT = TextLayout(prefix_ids=(101,), suffix_ids=(102,), max_length=8, pad_id=0, buckets=(4, 8))


def test_buckets_are_powers_of_two_closed_by_the_limit() -> None:
    assert make_buckets(256) == (16, 32, 64, 128, 256)
    assert make_buckets(300) == (16, 32, 64, 128, 256, 300)
    assert make_buckets(10) == (10,)


def test_bucket_for_picks_the_smallest_that_fits() -> None:
    assert [bucket_for(n, (4, 8)) for n in (1, 4, 5, 8)] == [4, 4, 8, 8]


def test_frame_adds_special_tokens() -> None:
    assert frame([5, 6], LAYOUT, "END", 0) == [101, 5, 6, 102]


@pytest.mark.parametrize(
    ("mode", "expected"), [("END", [101, 1, 2, 3, 4, 5, 6, 102]), ("START", [101, 3, 4, 5, 6, 7, 8, 102])]
)
def test_truncation_keeps_the_special_tokens(mode: str, expected: list[int]) -> None:
    assert frame(list(range(1, 9)), LAYOUT, mode, 0) == expected


def test_truncate_none_rejects_with_count_and_limit() -> None:
    with pytest.raises(InputError, match=r"input\[3\] has 10 tokens; the maximum is 8"):
        frame(list(range(8)), LAYOUT, "NONE", 3)


def test_unknown_truncate_mode_and_empty_request_are_input_errors() -> None:
    from runtime.text import truncate_mode

    with pytest.raises(InputError, match="truncate must be one of NONE, START, END, got 'MIDDLE'"):
        truncate_mode(["middle"], "END")
    assert truncate_mode(["start"], "END") == "START" and truncate_mode(None, "END") == truncate_mode([""], "END")
    with pytest.raises(InputError, match="no text"):
        frame_all([], LAYOUT, "END")


def test_pad_right_pads_to_the_bucket_with_mask_and_counts() -> None:
    batch = pad([[101, 5, 102], [101, 5, 6, 7, 8, 102]], LAYOUT)
    assert batch.input_ids.shape == (2, 8) and batch.input_ids.dtype == np.int64
    assert batch.input_ids[0].tolist() == [101, 5, 102, 0, 0, 0, 0, 0]
    assert batch.attention_mask.sum(axis=1).tolist() == [3, 6]
    assert batch.token_count.ravel().tolist() == [3, 6]


def test_layout_rejects_inconsistent_buckets() -> None:
    with pytest.raises(ValueError, match="last bucket"):
        TextLayout((), (), 8, 0, (4,))


def test_served_tokenizer_matches_the_checkpoint_tokenizer() -> None:
    """Our framing of tokenizer.json reproduces the Hugging Face tokenizer exactly, truncation included."""
    from transformers import AutoTokenizer

    path = default_model.checkpoint()
    hf = AutoTokenizer.from_pretrained(str(path))
    tok = load_tokenizer(str(path / "tokenizer.json"))
    prefix, suffix = special_token_frame(tok)
    assert (prefix, suffix) == ((hf.cls_token_id,), (hf.sep_token_id,))
    layout = TextLayout(prefix, suffix, 256, 0, make_buckets(256))
    texts = ["Hello, World!", "Ünïcödé 中文 🚀", "word " * 400]
    ours = frame_all(encode(tok, texts), layout, "END")
    theirs = hf(texts, truncation=True, max_length=256)["input_ids"]
    assert ours == theirs


def test_micro_batches_sort_by_length_and_respect_limits() -> None:
    from runtime.onnx_encoder import Packing, micro_batches

    lengths = np.array([50, 3, 40, 3, 7, 50, 12])
    groups = micro_batches(lengths, Packing(max_rows=3, max_tokens=100))
    assert sorted(np.concatenate(groups).tolist()) == list(range(7))
    for g in groups:
        assert len(g) <= 3 and len(g) * lengths[g].max() <= 100
    flat = np.concatenate(groups)
    assert lengths[flat].tolist() == sorted(lengths.tolist())


def test_micro_batches_bound_the_padding() -> None:
    """Rows of very different lengths go to separate calls; similar ones share a call."""
    from runtime.onnx_encoder import Packing, micro_batches

    lengths = np.array([10, 60, 11, 12, 58, 200])
    groups = micro_batches(lengths, Packing(max_padding=0.25))
    assert [sorted(lengths[g].tolist()) for g in groups] == [[10, 11, 12], [58, 60], [200]]
    for g in groups:
        assert len(g) * lengths[g].max() <= 1.25 * lengths[g].sum()
    assert len(micro_batches(lengths, Packing(max_padding=float("inf")))) == 1


def test_run_packed_equals_one_call_per_request() -> None:
    """Regrouped rows give the same embeddings as each request run on its own."""
    from runtime.onnx_encoder import Packing, run_packed

    class Session:  # mean of ids over the mask: sensitive to any misplaced row or column
        def get_inputs(self):
            return []

        def run(self, _, feed):
            ids, mask = feed["input_ids"].astype(np.float32), feed["attention_mask"]
            return [np.stack([(ids * mask).sum(1), mask.sum(1)], axis=1).astype(np.float32)]

    rng = np.random.default_rng(0)
    feeds = []
    for rows, width in ((2, 8), (3, 16), (1, 4)):
        lengths = rng.integers(1, width + 1, size=rows)
        mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
        feeds.append({"input_ids": rng.integers(1, 100, size=(rows, width)) * mask, "attention_mask": mask})
    packed = run_packed(Session(), feeds, ("EMBEDDING",), Packing(max_rows=2, max_tokens=64))
    for feed, got in zip(feeds, packed, strict=True):
        np.testing.assert_array_equal(got["EMBEDDING"], Session().run(None, feed)[0])


def test_run_packed_scatters_every_output_and_pads_per_token_ones_back() -> None:
    """Outputs travel by name (issue 33): a pooled one `[rows, d]` and a per-token one `[rows, w, d]`
    (multi-vector, sparse weights), each back to its request, the per-token one at the request's width."""
    from runtime.onnx_encoder import Packing, run_packed

    class Session:
        def run(self, names, feed):
            ids, mask = feed["input_ids"].astype(np.float32), feed["attention_mask"]
            pooled = (ids * mask).sum(1, keepdims=True)
            tokens = np.stack([ids * mask, mask.astype(np.float32)], axis=2)
            return [{"POOLED": pooled, "TOKENS": tokens}[n] for n in names]

    rng = np.random.default_rng(1)
    feeds = []
    for rows, width in ((2, 8), (3, 16), (1, 4)):
        lengths = rng.integers(1, width + 1, size=rows)
        mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
        feeds.append({"input_ids": rng.integers(1, 100, size=(rows, width)) * mask, "attention_mask": mask})
    packed = run_packed(
        Session(), feeds, ("POOLED", "TOKENS"), Packing(max_rows=2, max_tokens=64), per_token=frozenset({"TOKENS"})
    )
    for feed, got in zip(feeds, packed, strict=True):
        alone = dict(zip(("POOLED", "TOKENS"), Session().run(["POOLED", "TOKENS"], feed), strict=True))
        assert set(got) == {"POOLED", "TOKENS"}
        np.testing.assert_array_equal(got["POOLED"], alone["POOLED"])
        np.testing.assert_array_equal(got["TOKENS"], alone["TOKENS"])  # zeros past each row's length


def test_run_vision_packed_keeps_to_the_patch_limit_and_each_image_apart() -> None:
    """Images pack in order up to `max_patches` a call; a larger one runs alone; features go back to their image."""
    from runtime.onnx_encoder import run_vision_packed

    calls: list[list[int]] = []

    class Session:  # each 2×2 merge → (image's first pixel, segment id): sensitive to misplaced patches
        def run(self, _, feed):
            segments = feed["segment_ids"]
            calls.append([int((segments == s).sum()) for s in np.unique(segments)])
            merged = np.stack([feed["pixel_values"][::4, 0], segments[::4].astype(np.float32)], axis=1)
            return [merged]

    counts = [1024, 1024, 512, 5120, 16, 16]
    feeds = [
        {
            "pixel_values": np.full((1, n, 1176), i, dtype=np.float32),
            "position_ids": np.zeros((1, n, 2), dtype=np.int64),
        }
        for i, n in enumerate(counts)
    ]
    out = [o["IMAGE_EMBEDS"] for o in run_vision_packed(Session(), feeds, ("IMAGE_EMBEDS",), max_patches=2048)]
    assert calls == [[1024, 1024], [512], [5120], [16, 16]]
    for i, (n, features) in enumerate(zip(counts, out, strict=True)):
        assert features.shape == (1, n // 4, 2)
        assert (features[0, :, 0] == i).all()  # its own pixels …
        assert len(np.unique(features[0, :, 1])) == 1  # … under one segment id


def test_token_content_checks_the_vocabulary() -> None:
    from runtime.text import token_content

    assert token_content(np.array([5, 0, 9], dtype="<i8").tobytes(), 10, 0) == [5, 0, 9]
    with pytest.raises(InputError, match=r"input\[2\]\[1\] is token id 10, outside the vocabulary \(0–9\)"):
        token_content(np.array([5, 10], dtype="<i8").tobytes(), 10, 2)
    with pytest.raises(InputError, match="token id -1"):
        token_content(np.array([-1], dtype="<i8").tobytes(), 10, 0)
    with pytest.raises(InputError, match="no token ids"):
        token_content(b"", 10, 0)


def test_given_ids_are_taken_exactly_and_truncated_inside_their_frame() -> None:
    """Token-id input is the sequence the model sees: no second [CLS] … [SEP] (it was added twice)."""
    from runtime.text import fit_given

    layout = TextLayout(prefix_ids=(101,), suffix_ids=(102,), max_length=6, pad_id=0, buckets=(6,))
    assert fit_given([101, 7, 8, 102], layout, "END", 0) == [101, 7, 8, 102]
    assert fit_given([7, 8], layout, "END", 0) == [7, 8]  # no frame added either
    long = [101, 1, 2, 3, 4, 5, 6, 102]
    assert fit_given(long, layout, "END", 0) == [101, 1, 2, 3, 4, 102]  # the final token stays
    assert fit_given(long, layout, "START", 0) == [101, 3, 4, 5, 6, 102]
    assert fit_given([1, 2, 3, 4, 5, 6, 7], layout, "END", 0) == [1, 2, 3, 4, 5, 6]  # unframed: cut as given
    with pytest.raises(InputError, match=r"input\[2\] has 8 tokens; the maximum is 6"):
        fit_given(long, layout, "NONE", 2)


def _metaspace_tokenizer():
    """A sentencepiece-style BPE (Metaspace, no split: the whole text is one word), as Mistral's and Llama's."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from tests.tiny.common import CORPUS

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.train_from_iterator(CORPUS * 20, trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "</s>"]))
    return tok


def _byte_level_tokenizer():
    from tests.tiny.common import bpe

    return bpe(["<|endoftext|>"])


LONG_TEXTS = [
    " ".join(["The quick brown fox jumps over the lazy dog."] * 200),
    "中文日本語🚀" * 900,  # no whitespace at all
    ("def f(x): return x ** 2  # {}, [], (), <>, /, \\ " * 150) + "a" * 700,
    "word " + " " * 20_000 + "tail words at the very end",  # mostly whitespace: the cut keeps too few tokens
    ("x" * 300 + " ") * 40,  # words longer than the cut margin
    "Ünïcödé   and\tTabs\nand newlines " * 300,
]


@pytest.mark.parametrize(
    "tokenizer", ["minilm-wordpiece", "byte-level-bpe", "metaspace-bpe"], ids=lambda name: name.split("-")[0]
)
@pytest.mark.parametrize("mode", ["END", "START", "NONE"])
def test_bounded_encoding_truncates_exactly_as_the_whole_text(tokenizer: str, mode: str) -> None:
    """A long text is tokenised as a cut when truncation keeps only part of it (issue 22, item 14): the
    framed result is the whole text's, token for token, for every tokenizer kind the families use. A
    text that stays sparse (fewer tokens than the room) beyond `sparse_limit` characters is cut there by
    characters (issue 32, item 4): its tokens are then the whole text's first (END) or last (START) ones,
    and NONE refuses it."""
    from runtime.text import Partial, cut_length, encode_bounded, sparse_limit

    tok = {
        "minilm-wordpiece": lambda: load_tokenizer(str(default_model.checkpoint() / "tokenizer.json")),
        "byte-level-bpe": _byte_level_tokenizer,
        "metaspace-bpe": _metaspace_tokenizer,
    }[tokenizer]()
    layout = TextLayout(prefix_ids=(1,), suffix_ids=(2,), max_length=40, pad_id=0, buckets=(16, 40))
    room = 38
    assert all(len(t) > cut_length(room) for t in LONG_TEXTS)
    whole = encode(tok, LONG_TEXTS)
    decided = 0
    for i, (text, full) in enumerate(zip(LONG_TEXTS, whole, strict=True)):
        (probe,) = encode_bounded(tok, [text], ["END" if mode == "NONE" else mode], room)
        sparse = len(text) > sparse_limit(room) and not isinstance(probe, Partial)
        if sparse and mode == "NONE":
            (cut,) = encode_bounded(tok, [text], [mode], room)  # a batch call never raises for one text
            with pytest.raises(InputError, match=rf"input\[{i}\] has {len(text)} characters and only \d+ tokens"):
                frame(cut, layout, mode, i)
            continue
        (ids,) = encode_bounded(tok, [text], [mode], room)
        decided += isinstance(ids, Partial)
        if sparse:
            assert len(ids) <= room and len(ids) < len(full), (tokenizer, mode, i)
            assert ids == (full[: len(ids)] if mode == "END" else full[len(full) - len(ids) :]), (tokenizer, mode, i)
            continue
        if mode == "NONE" and len(full) > room:
            with pytest.raises(InputError, match=rf"input\[{i}\] has (more than )?\d+ tokens; the maximum is 40"):
                frame(ids, layout, mode, i)
            continue
        assert frame(ids, layout, mode, i) == frame(full, layout, mode, i), (tokenizer, mode, i)
    assert decided >= 2 or mode == "NONE"  # some were decided from their cut


def test_a_sparse_text_costs_its_cut_not_its_length() -> None:
    """3,560 spaces or 101-character words kept the cut under the room and the whole text was tokenised:
    a 2 MiB text cost 2.25 s and 671-788 MiB with MiniLM's tokenizer (issue 32, item 4). Now at most
    `sparse_limit(room)` characters are ever tokenised, whatever the text's length."""
    from runtime.text import encode_bounded, sparse_limit

    tok = load_tokenizer(str(default_model.checkpoint() / "tokenizer.json"))
    seen: list[int] = []
    real = tok.encode_batch

    class Counting:
        def encode_batch(self, texts, add_special_tokens=False):
            seen.extend(len(t) for t in texts)
            return real(texts, add_special_tokens=add_special_tokens)

    room = 510
    for text in (" " * (2 << 20) + "end", ("x" * 101 + " ") * 20_000, "é " * (1 << 20)):
        for mode in ("END", "START"):
            seen.clear()
            encode_bounded(Counting(), [text], [mode], room)  # type: ignore[arg-type]
            assert max(seen) <= sparse_limit(room), (mode, seen)


def test_short_texts_are_tokenised_whole() -> None:
    from runtime.text import Partial, encode_bounded

    tok = load_tokenizer(str(default_model.checkpoint() / "tokenizer.json"))
    texts = ["a cat", "a kitten " * 50]
    bounded = encode_bounded(tok, texts, ["END", "NONE"], 254)
    assert bounded == encode(tok, texts) and not any(isinstance(b, Partial) for b in bounded)


def test_a_sparse_text_under_none_fails_only_its_own_request() -> None:
    """The preprocessor tokenises every request of a batch in one call: a sparse text refused with
    `truncate: NONE` raised from that call, failing the batch, under a batch-wide index. It is refused
    where its own request frames it, with its own index."""
    from runtime.text import SparseCut, encode_bounded, sparse_limit

    tok = load_tokenizer(str(default_model.checkpoint() / "tokenizer.json"))
    layout = TextLayout(prefix_ids=(101,), suffix_ids=(102,), max_length=40, pad_id=0, buckets=(16, 40))
    sparse = " " * (sparse_limit(38) + 10) + "end"
    contents = encode_bounded(tok, ["a fine text", sparse, "another"], ["NONE", "NONE", "END"], 38)
    assert isinstance(contents[1], SparseCut) and not isinstance(contents[0], SparseCut)
    assert frame_all(contents[:1], layout, "NONE") == [[101, *contents[0], 102]]
    with pytest.raises(InputError, match=r"input\[0\] has \d+ characters and only 0 tokens"):
        frame_all(contents[1:2], layout, "NONE")  # the second request's first item
    assert frame(contents[1], layout, "END", 0) == [101, 102]  # cut by characters where it may be cut

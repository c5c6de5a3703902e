"""Unit tests of the pure tokenisation functions in runtime/text.py."""

from __future__ import annotations

import numpy as np
import pytest

from launcher import default_model
from runtime.errors import InputError
from runtime.text import TextLayout, bucket_for, encode, frame, frame_all, load_tokenizer, make_buckets, pad, special_token_frame

LAYOUT = TextLayout(prefix_ids=(101,), suffix_ids=(102,), max_length=8, pad_id=0, buckets=(4, 8))


def test_buckets_are_powers_of_two_closed_by_the_limit() -> None:
    assert make_buckets(256) == (16, 32, 64, 128, 256)
    assert make_buckets(300) == (16, 32, 64, 128, 256, 300)
    assert make_buckets(10) == (10,)


def test_bucket_for_picks_the_smallest_that_fits() -> None:
    assert [bucket_for(n, (4, 8)) for n in (1, 4, 5, 8)] == [4, 4, 8, 8]


def test_frame_adds_special_tokens() -> None:
    assert frame([5, 6], LAYOUT, "END", 0) == [101, 5, 6, 102]


@pytest.mark.parametrize(("mode", "expected"), [("END", [101, 1, 2, 3, 4, 5, 6, 102]), ("START", [101, 3, 4, 5, 6, 7, 8, 102])])
def test_truncation_keeps_the_special_tokens(mode: str, expected: list[int]) -> None:
    assert frame(list(range(1, 9)), LAYOUT, mode, 0) == expected


def test_truncate_none_rejects_with_count_and_limit() -> None:
    with pytest.raises(InputError, match=r"input\[3\] has 10 tokens; the maximum is 8"):
        frame(list(range(8)), LAYOUT, "NONE", 3)


def test_unknown_truncate_mode_and_empty_request_are_input_errors() -> None:
    with pytest.raises(InputError, match="truncate must be one of"):
        frame_all([[1]], LAYOUT, "MIDDLE")
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

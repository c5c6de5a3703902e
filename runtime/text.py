"""Tokenisation for the encoders: special tokens, truncation, length buckets.

The checkpoint's `tokenizer.json` is loaded with the `tokenizers` library and
used without its own truncation, padding or post-processor; special tokens are
added here from explicit id lists so that truncation keeps them and every family
states its sequence layout (`[CLS] … [SEP]`, `<s> … </s>`) in one place.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from tokenizers import Tokenizer

from contract import TRUNCATE_MODES, TextParams, input_type_of
from runtime.errors import InputError


@dataclass(frozen=True)
class Prompt:
    """The model's query template (`{instruction}`, `{text}`); documents are always raw."""

    query_template: str = ""
    default_instruction: str = ""
    document_template: str = ""  # GME wraps documents too, always with the default instruction

    @classmethod
    def of(cls, params: TextParams) -> Prompt:
        return cls(params.query_template, params.default_instruction, params.document_template)


def apply_prompt(texts: list[str], input_type: str | None, instruction: str | None, prompt: Prompt) -> list[str]:
    """Wrap queries in the instruction template (documents in theirs, if the model has one); no input type
    means a document, or a query when an instruction comes with it."""
    try:
        input_type = input_type_of(input_type, instruction)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    template = prompt.query_template if input_type == "query" else prompt.document_template
    if not template:
        return texts
    task = (instruction if input_type == "query" else None) or prompt.default_instruction
    return [template.format(instruction=task, text=t) for t in texts]


@dataclass(frozen=True)
class TextLayout:
    """How a sequence is framed and bounded."""

    prefix_ids: tuple[int, ...]
    suffix_ids: tuple[int, ...]
    max_length: int
    pad_id: int
    buckets: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.max_length <= len(self.prefix_ids) + len(self.suffix_ids):
            raise ValueError(f"max_length {self.max_length} leaves no room for content")
        if not self.buckets or list(self.buckets) != sorted(set(self.buckets)):
            raise ValueError(f"buckets must be increasing and unique, got {self.buckets}")
        if self.buckets[-1] != self.max_length:
            raise ValueError(f"the last bucket must equal max_length {self.max_length}, got {self.buckets}")

    @classmethod
    def of(cls, params: TextParams) -> TextLayout:
        return cls(params.prefix_ids, params.suffix_ids, params.max_length, params.pad_id, params.buckets)


def make_buckets(max_length: int, smallest: int = 16) -> tuple[int, ...]:
    """Powers of two from `smallest` up to `max_length`, which always closes the list."""
    out: list[int] = []
    size = smallest
    while size < max_length:
        out.append(size)
        size *= 2
    out.append(max_length)
    return tuple(out)


def load_tokenizer(path: str) -> Tokenizer:
    """A tokenizer with its own truncation and padding switched off."""
    tok = Tokenizer.from_file(path)
    tok.no_truncation()
    tok.no_padding()
    return tok


def special_token_frame(tok: Tokenizer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The ids the tokenizer's post-processor puts before and after the content."""
    bare = tok.encode("hello", add_special_tokens=False).ids
    full = tok.encode("hello", add_special_tokens=True).ids
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return tuple(full[:start]), tuple(full[start + len(bare) :])
    raise ValueError("cannot locate the content inside the post-processed sequence")


def room_of(layout: TextLayout) -> int:
    """Content tokens a sequence can hold inside the model's frame."""
    return layout.max_length - len(layout.prefix_ids) - len(layout.suffix_ids)


def frame(content: list[int], layout: TextLayout, truncate: str, index: int) -> list[int]:
    """Add the special tokens, truncating the content per `truncate`."""
    room = room_of(layout)
    if truncate == "NONE" and isinstance(content, SparseCut):
        raise content.refusal(index)
    if len(content) > room:
        total = len(content) + len(layout.prefix_ids) + len(layout.suffix_ids)
        if truncate == "NONE":
            count = f"more than {total - 1}" if isinstance(content, Partial) else str(total)
            raise InputError(
                f"input[{index}] has {count} tokens; the maximum is {layout.max_length} "
                "(set truncate to START or END to cut it)"
            )
        content = content[:room] if truncate == "END" else content[len(content) - room :]
    return [*layout.prefix_ids, *content, *layout.suffix_ids]


def bucket_for(length: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket that holds `length` tokens."""
    return buckets[min(bisect.bisect_left(buckets, length), len(buckets) - 1)]


@dataclass(frozen=True)
class Batch:
    """Right-padded token ids for one request, ready for the encoder."""

    input_ids: np.ndarray  # int64 [rows, bucket]
    attention_mask: np.ndarray  # int64 [rows, bucket]
    token_count: np.ndarray  # int32 [rows, 1]
    token_type_ids: np.ndarray | None = None  # int64 [rows, bucket], for pairs of a model that takes them


class Padding(Protocol):
    pad_id: int
    buckets: tuple[int, ...]


def pad(rows: list[list[int]], layout: Padding, types: list[list[int]] | None = None) -> Batch:
    """Pad `rows` (texts, or pairs with their token `types`) on the right to the bucket of the longest
    one; `layout`: anything with `pad_id` and `buckets`."""
    width = bucket_for(max(len(r) for r in rows), layout.buckets)
    ids = np.full((len(rows), width), layout.pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    kinds = np.zeros((len(rows), width), dtype=np.int64) if types is not None else None
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
        if kinds is not None and types is not None:
            kinds[i, : len(row)] = types[i]
    counts = np.array([[len(r)] for r in rows], dtype=np.int32)
    return Batch(ids, mask, counts, kinds)


def truncate_mode(values: list[str] | None, default: str) -> str:
    """A request's TRUNCATE (its first value, any case), or the model's default; the one place a mode
    is checked (the functions below take a checked one)."""
    mode = values[0].upper() if values and values[0] else default
    if mode not in TRUNCATE_MODES:
        raise InputError(f"truncate must be one of {', '.join(TRUNCATE_MODES)}, got {mode!r}")
    return mode


def encode(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Content token ids (no special tokens) of a whole batch, in one call."""
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


class Partial(list):
    """Token ids of part of a text that holds more than these: enough to truncate it exactly, and to
    refuse it with `truncate: NONE`, without its full count."""


class SparseCut(list):
    """The tokens of a text cut by characters: longer than `sparse_limit` and that sparse (whitespace,
    long words). They stand for the text when it may be cut; with `truncate: NONE` it is refused, in
    its own request, where it is framed (the cut happens for a whole batch at once)."""

    def __init__(self, ids: list[int], chars: int, limit: int) -> None:
        super().__init__(ids)
        self.chars, self.limit = chars, limit

    def refusal(self, index: int) -> InputError:
        return InputError(
            f"input[{index}] has {self.chars} characters and only {len(self)} tokens in its first {self.limit}; "
            f"a text that sparse may have at most {self.limit} characters (set truncate to START or END to cut it)"
        )


CUT_CHARS_PER_TOKEN = 12  # a cut keeps this many characters per token of room (English: 4-5 per token)
SPARSE_CHARS_PER_TOKEN = 32  # the second, last cut: beyond it a text is cut by characters
CUT_MARGIN_CHARS = 256  # tokens this close to a cut are dropped: the cut may have split their word


def cut_length(room: int) -> int:
    """Characters of a text tokenised when only `room` tokens of it can be kept."""
    return CUT_CHARS_PER_TOKEN * room + 2 * CUT_MARGIN_CHARS


def sparse_limit(room: int) -> int:
    """The most characters of a text ever tokenised for `room` tokens: a text longer than this whose
    first (END) or last (START) this many characters hold no more than `room` tokens is cut there."""
    return SPARSE_CHARS_PER_TOKEN * room + 2 * CUT_MARGIN_CHARS


def encode_bounded(tok: Tokenizer, texts: list[str], truncates: list[str], room: int) -> list[list[int]]:
    """`encode`, with the work of a long text bounded by what truncation keeps of it: O(room), never
    O(text).

    A text longer than `cut_length(room)` characters is first tokenised as a cut: its start for END
    (and NONE), its end for START. The cut's tokens away from the cut (by `CUT_MARGIN_CHARS`) are the
    text's own; when they are more than `room`, they decide the result exactly as the whole text
    would: END keeps the first `room + 1` of them (still over the room, so framing truncates or, for
    NONE, refuses), START the last `room + 1`. A cut that holds fewer tokens (long words, whitespace)
    grows once, to `sparse_limit(room)` characters; a text that is longer still and as sparse is cut
    by characters there (a `SparseCut`: framing refuses it with NONE, in its own request). A 2 MiB text
    of spaces costs the tokenisation of 16 KiB, not of 2 MiB.
    """
    out: list[list[int] | None] = [None] * len(texts)
    final = sparse_limit(room)
    for limit in (cut_length(room), final):
        cuts = [
            (i, t[:limit] if m != "START" else t[-limit:], m)
            for i, (t, m) in enumerate(zip(texts, truncates, strict=True))
            if out[i] is None and len(t) > limit
        ]
        if not cuts:
            break
        for (i, cut, mode), enc in zip(
            cuts, tok.encode_batch([c for _, c, _ in cuts], add_special_tokens=False), strict=True
        ):
            if mode == "START":
                kept = [t for t, (start, _) in zip(enc.ids, enc.offsets, strict=True) if start >= CUT_MARGIN_CHARS]
                out[i] = Partial(kept[-(room + 1) :]) if len(kept) > room else None
            else:
                edge = len(cut) - CUT_MARGIN_CHARS
                kept = [t for t, (_, end) in zip(enc.ids, enc.offsets, strict=True) if end <= edge]
                out[i] = Partial(kept[: room + 1]) if len(kept) > room else None
            if out[i] is None and limit == final:
                out[i] = SparseCut(kept, len(texts[i]), final)
    whole = [i for i, ids in enumerate(out) if ids is None]
    for i, ids in zip(whole, encode(tok, [texts[i] for i in whole]), strict=True):
        out[i] = ids
    return out  # type: ignore[return-value]


def token_content(blob: bytes, vocab_size: int, index: int) -> list[int]:
    """Pre-tokenised content sent as little-endian int64 bytes, checked against the vocabulary."""
    if len(blob) % 8:
        raise InputError(f"input[{index}]: token ids must be int64 values")
    ids = np.frombuffer(blob, dtype="<i8")
    if ids.size == 0:
        raise InputError(f"input[{index}] holds no token ids")
    bad = np.flatnonzero((ids < 0) | (ids >= vocab_size))
    if bad.size:
        j = int(bad[0])
        raise InputError(f"input[{index}][{j}] is token id {int(ids[j])}, outside the vocabulary (0–{vocab_size - 1})")
    return ids.tolist()


def fit_given(ids: list[int], layout: TextLayout, truncate: str, index: int) -> list[int]:
    """Token ids sent by a client, taken exactly as given (template and special tokens are already in
    them, as /tokenize returns them); over the limit, the truncation policy cuts the content inside
    the model's frame when the ids carry it (so the final token stays), else the ids themselves."""
    if len(ids) <= layout.max_length:
        return ids
    prefix, suffix = list(layout.prefix_ids), list(layout.suffix_ids)
    framed = ids[: len(prefix)] == prefix and (not suffix or ids[-len(suffix) :] == suffix)
    if framed and truncate != "NONE":
        return frame(ids[len(prefix) : len(ids) - len(suffix)], layout, truncate, index)
    if truncate == "NONE":
        raise InputError(
            f"input[{index}] has {len(ids)} tokens; the maximum is {layout.max_length} "
            "(set truncate to START or END to cut it)"
        )
    return ids[: layout.max_length] if truncate == "END" else ids[len(ids) - layout.max_length :]


def frame_all(contents: list[list[int]], layout: TextLayout, truncate: str) -> list[list[int]]:
    """Frame every row of one request; the first bad row fails the request."""
    if not contents:
        raise InputError("the request holds no text")
    return [frame(ids, layout, truncate, i) for i, ids in enumerate(contents)]

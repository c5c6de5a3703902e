"""Tokenisation of (query, document) pairs for cross-encoders, exactly as the model's tokenizer does it.

The reference is the model card's `tokenizer(pairs, padding=True, truncation=True, max_length=N)`:
Hugging Face's fast tokenizer, whose `longest_first` truncation cuts the longer sequence of the pair
first (the legacy algorithm `tokenizers` keeps verbatim), then frames the pair with its special
tokens (`[CLS] q [SEP] d [SEP]`, `<s> q </s></s> d </s>`) and token types. Here the frame comes
from explicit id lists (`PairParams`), and a long text costs only what truncation can keep of it
(`encode_bounded`).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

from tokenizers import Tokenizer

from contract import PairParams, PromptPairParams
from runtime.errors import InputError
from runtime.text import Partial, SparseCut, TextLayout, encode, encode_bounded, frame, room_of


@dataclass(frozen=True)
class PairLayout:
    prefix_ids: tuple[int, ...]
    middle_ids: tuple[int, ...]
    suffix_ids: tuple[int, ...]
    second_type: int
    max_length: int
    pad_id: int
    buckets: tuple[int, ...]

    @classmethod
    def of(cls, p: PairParams) -> PairLayout:
        return cls(p.prefix_ids, p.middle_ids, p.suffix_ids, p.second_type, p.max_length, p.pad_id, p.buckets)

    @property
    def room(self) -> int:
        """Content tokens of query and document together."""
        return self.max_length - len(self.prefix_ids) - len(self.middle_ids) - len(self.suffix_ids)


def kept_lengths(n1: int, n2: int, room: int) -> tuple[int, int]:
    """How many tokens of each sequence `longest_first` keeps (tokenizers' `truncate_pair`): the shorter
    keeps all it can up to half the room, the longer the rest (the odd token goes to the longer)."""
    if n1 + n2 <= room:
        return n1, n2
    swap = n1 > n2
    short, long_ = (n2, n1) if swap else (n1, n2)
    long_ = short if short > room else max(short, room - short)
    if short + long_ > room:
        short = room // 2
        long_ = short + room % 2
    k1, k2 = (long_, short) if swap else (short, long_)
    return min(k1, n1), min(k2, n2)


def _settled(q: list[int], d: list[int], room: int) -> bool:
    """Whether the kept lengths are known although a `Partial` sequence's full length is not: they
    depend on it only through its order against the other, so every order it could take is tried."""

    def candidates(ids: list[int], other: list[int]) -> list[int]:
        if not isinstance(ids, Partial):
            return [len(ids)]
        floor = len(ids)  # it holds more tokens than these
        return sorted({n for n in (floor, len(other), len(other) + 1, 1 << 40) if n >= floor})

    outcomes = {kept_lengths(a, b, room) for a, b in product(candidates(q, d), candidates(d, q))}
    return len(outcomes) == 1


def encode_pairs(
    tok: Tokenizer,
    queries: list[str],
    documents: list[str],
    layout: PairLayout,
    truncate: str,
    max_doc_tokens: int | None = None,
) -> list[tuple[list[int], list[int]]]:
    """(ids, token types) of each framed pair; `truncate` NONE refuses a pair over the limit (naming
    its row as `input[i]`), END keeps the start of each sequence, START the end. `max_doc_tokens`
    first cuts each document to that many tokens (Cohere's `max_tokens_per_doc`), whatever `truncate`."""
    room, n = layout.room, len(documents)
    modes = ["START" if truncate == "START" else "END"] * n
    unique = list(dict.fromkeys(queries))  # a request's query sits beside each of its documents: tokenised once
    encoded = dict(zip(unique, encode_bounded(tok, unique, modes[: len(unique)], room), strict=True))
    qs, ds = [encoded[q] for q in queries], encode_bounded(tok, documents, modes, room)
    whole: dict[str, list[int]] = {}  # a query's every token, for the rows whose cut it decides
    out = []
    for i, (q, d) in enumerate(zip(qs, ds, strict=True)):
        if truncate == "NONE":  # a text cut by characters (too sparse to tokenise whole) cannot be kept whole
            for cut in (c for c in (q, d) if isinstance(c, SparseCut)):
                raise cut.refusal(i)
        if max_doc_tokens is not None and len(d) > max_doc_tokens:
            d = d[:max_doc_tokens] if truncate != "START" else d[len(d) - max_doc_tokens :]
        if len(q) + len(d) > room:
            if truncate == "NONE":
                total = len(q) + len(d) + layout.max_length - room
                partial = isinstance(q, Partial) or isinstance(d, Partial)
                count = f"more than {total - 1}" if partial else str(total)
                raise InputError(
                    f"input[{i}] has {count} tokens with the query; the maximum is {layout.max_length} "
                    "(allow truncation to cut it)"
                )
            if not _settled(q, d, room):  # both long and an odd room: which is longer decides the odd token
                if queries[i] not in whole:  # queries are short (the adapter caps them): once per query
                    whole[queries[i]] = encode(tok, [queries[i]])[0]
                q = whole[queries[i]]
                d = encode_bounded(tok, [documents[i]], modes[:1], max(room, len(q)))[0]
            k1, k2 = kept_lengths(len(q), len(d), room)
            q, d = (q[:k1], d[:k2]) if truncate == "END" else (q[len(q) - k1 :], d[len(d) - k2 :])
        first = [*layout.prefix_ids, *q, *layout.middle_ids]
        second = [*d, *layout.suffix_ids]
        out.append(([*first, *second], [0] * len(first) + [layout.second_type] * len(second)))
    return out


def encode_prompted(
    tok: Tokenizer,
    queries: list[str],
    documents: list[str],
    params: PromptPairParams,
    truncate: str,
    instruction: str | None = None,
) -> list[tuple[list[int], list[int]]]:
    """An LLM reranker's pairs (Qwen3-Reranker's README): each worded by the template and tokenised as
    one text, cut to the room between the prompt's prefix and suffix (END keeps its start, START its
    end, NONE refuses), and framed by them; no token types."""
    task = instruction or params.default_instruction
    layout = TextLayout(params.prefix_ids, params.suffix_ids, params.max_length, params.pad_id, params.buckets)
    bodies = [
        params.template.format(instruction=task, query=q, document=d) for q, d in zip(queries, documents, strict=True)
    ]
    contents = encode_bounded(tok, bodies, [truncate] * len(bodies), room_of(layout))
    rows = [frame(content, layout, truncate, i) for i, content in enumerate(contents)]
    return [(row, [0] * len(row)) for row in rows]

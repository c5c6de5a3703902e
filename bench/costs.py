"""`python -m bench.costs`: what each input path costs per input byte, at growing sizes, adversarial
shapes included (issue 32: every stage's work grows linearly with its input and stays within a budget).

Each path is the stage's own function, called in-process on inputs built here (no server, no network):
- body: the adapter's value count and JSON parse of a request body (`client/bodies.py`);
- text: the preprocessor's bounded tokenisation of one text (`runtime/text.py`, MiniLM's tokenizer);
- pairs: a cross-encoder's pair tokenisation of one rerank request at the adapter's bounds (1,000
  documents, the longest query the query × documents budget allows them; an odd room);
- prompt: an LLM reranker's pairs of the same request, the query worded into each (`encode_prompted`);
- rerank wire: the gRPC inputs the adapter builds for that request (`client/triton.py`);
- image: decode and CLIP preprocessing of one image (`runtime/images.py`): thin PNGs, progressive JPEGs
  with many scans, PNGs with many chunks.
For each family it prints seconds, peak memory and the outcome at every size, and the growth: the time
at the largest size over the time at a 4× smaller one (linear: about 4; a floor of 2 ms absorbs timer
noise for paths whose cost is bounded). `--sizes` sets them (bytes); the test suite runs small ones.
"""

from __future__ import annotations

import argparse
import io
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

GROWTH_FLOOR_S = 0.002
FULL_SIZES = (128 << 10, 512 << 10, 2 << 20)  # up to the adapter's 2 MiB body cap
SMALL_SIZES = (16 << 10, 64 << 10, 256 << 10)


@dataclass(frozen=True)
class Family:
    """One adversarial input family of one path: `make(size)` builds an input of about `size` bytes,
    `run(input)` is the stage (a refusal is an outcome, not a failure), `size_of` measures the input."""

    path: str
    name: str
    make: Callable[[int], object]
    run: Callable[[object], object]


@dataclass(frozen=True)
class Row:
    path: str
    name: str
    size: int
    seconds: float
    peak_mib: float
    outcome: str


def _peak_reset() -> bool:
    """Reset this process's peak RSS (Linux: `echo 5 > /proc/self/clear_refs`)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def measure(family: Family, size: int, repeat: int = 3) -> Row:
    """The best of `repeat` runs' seconds, and the peak RSS above the start of the last run."""
    data = family.make(size)
    best, outcome, peak = float("inf"), "ok", 0.0
    for _ in range(repeat):
        reset = _peak_reset()
        before = _status_kib("VmRSS")
        start = time.perf_counter()
        try:
            family.run(data)
            outcome = "ok"
        except Exception as exc:  # noqa: BLE001 -- a refusal is the stage's answer
            outcome = f"refused: {type(exc).__name__}"
        best = min(best, time.perf_counter() - start)
        if reset:
            peak = max(peak, (_status_kib("VmHWM") - before) / 1024)
    return Row(family.path, family.name, size, best, peak, outcome)


def growth(rows: list[Row]) -> float:
    """Time at the largest size over time at the largest size ≤ a quarter of it (floored)."""
    largest = max(rows, key=lambda r: r.size)
    smaller = [r for r in rows if r.size * 4 <= largest.size]
    base = max(smaller, key=lambda r: r.size) if smaller else min(rows, key=lambda r: r.size)
    ratio = largest.size / base.size
    return max(largest.seconds, GROWTH_FLOOR_S) / max(base.seconds, GROWTH_FLOOR_S) * 4 / ratio


# --- inputs ------------------------------------------------------------------------------------------


def escaped_quotes(size: int) -> bytes:
    """Finding 2: `"` + `\\"`×N + `[`×2200, not even JSON: a failing string pattern rescanned it from each quote."""
    return b'"' + b'\\"' * max(1, (size - 2201) // 2) + b"[" * 2200


def brackets_in_texts(size: int) -> bytes:
    return orjson.dumps({"input": ["[{" * max(1, size // 4 // 8)] * 4})


def png(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (90, 140, 200)).save(buf, "PNG")
    return buf.getvalue()


def thin_png(size: int) -> bytes:
    """Finding 1: a width×1 PNG of a few bytes per pixel column (1024×1 is 74 bytes)."""
    return png(max(2, size // 4), 1)


def many_scans_jpeg(side: int, scans: int) -> bytes:
    """Finding 3: a progressive JPEG whose last scan is repeated up to `scans` scans (each a few bytes)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (side, side), (120, 30, 200)).save(buf, "JPEG", progressive=True, quality=50)
    data = buf.getvalue()
    last = data.rfind(b"\xff\xda")
    return data[:-2] + data[last:-2] * max(0, scans - data.count(b"\xff\xda")) + b"\xff\xd9"


def scans_for(size: int) -> bytes:
    return many_scans_jpeg(2048, max(12, size // 40))


def many_chunks_png(size: int) -> bytes:
    """Finding 3: a PNG with empty ancillary chunks (12 bytes each) before its pixels."""
    base = png(8, 8)
    chunk = struct.pack(">I", 0) + b"tEXt" + struct.pack(">I", zlib.crc32(b"tEXt"))
    return base[:33] + chunk * max(1, size // 12) + base[33:]


def spaces(size: int) -> str:
    """Finding 4: whitespace makes no WordPiece token, so no cut held enough tokens."""
    return " " * size + "end"


def long_words(size: int) -> str:
    """Finding 4: WordPiece maps a word over 100 characters to one [UNK]."""
    return ("x" * 101 + " ") * max(1, size // 102)


def words(size: int) -> str:
    return "the quick brown fox jumps over the lazy dog " * max(1, size // 44)


# Finding 5: a rerank request at the adapter's bounds: 1,000 documents (max_documents_per_request)
# beside the longest query that max_query_document_bytes (2 MiB) allows them, 2,096 bytes of emoji.
# Before that budget, a 32 KiB query beside 1,000 one-letter documents (a 39 KB body) built 32.8 MB.
DOCUMENTS = 1000
BUDGET_QUERY = "🚀" * (2 * 1024 * 1024 // DOCUMENTS // 4)


def documents_for(size: int) -> list[str]:
    """1,000 documents filling about `size` bytes of request body beside the query."""
    each = max(1, (size - len(BUDGET_QUERY.encode())) // DOCUMENTS - 4)
    return [("lorem ipsum dolor sit amet " * (each // 27 + 1))[:each]] * DOCUMENTS


# --- stages ------------------------------------------------------------------------------------------


def families(tokenizer_path: str) -> list[Family]:
    from client.bodies import _parse
    from client.triton import request_inputs
    from contract import QUERY, TEXT
    from runtime.images import ClipImageSpec, clip_pixels, decode_image
    from runtime.pairs import PairLayout, encode_pairs, encode_prompted
    from runtime.text import encode_bounded, load_tokenizer, make_buckets

    tok = load_tokenizer(tokenizer_path)
    room = 510
    pairs = PairLayout((101,), (102,), (102,), 1, 512, 0, make_buckets(512))  # room 509: odd
    clip = ClipImageSpec(224, 224, 224, (0.48, 0.46, 0.41), (0.27, 0.26, 0.28))
    max_pixels = 4096 * 4096

    from contract import PromptPairParams

    prompt = PromptPairParams(
        tokenizer="tokenizer.json",
        template="<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}",
        default_instruction="Given a web search query, retrieve relevant passages",
        prefix_ids=(101,),
        suffix_ids=(102,),
        max_length=512,
        pad_id=0,
        buckets=make_buckets(512),
        default_truncate="END",
    )

    def body(raw):
        return _parse(raw, 2048, lambda data: data)

    def text(t):
        return encode_bounded(tok, [t], ["END"], room)

    def pair(docs):
        return encode_pairs(tok, [BUDGET_QUERY] * len(docs), docs, pairs, "END")

    def prompted(docs):
        return encode_prompted(tok, [BUDGET_QUERY] * len(docs), docs, prompt, "END")

    def wire(docs):
        inputs = request_inputs({TEXT: docs, QUERY: [BUDGET_QUERY] * len(docs)}, {})
        return sum(len(i._get_content() or b"") for i in inputs)

    def image(data):
        return clip_pixels(decode_image(data, max_pixels), clip)

    return [
        Family("body", "escaped quotes + 2,200 [", escaped_quotes, body),
        Family("body", "brackets inside texts", brackets_in_texts, body),
        Family("text", "spaces", spaces, text),
        Family("text", "101-character words", long_words, text),
        Family("text", "words", words, text),
        Family("pairs", "2 KiB query × 1,000 documents", documents_for, pair),
        Family("prompt", "2 KiB query worded into 1,000 pairs", documents_for, prompted),
        Family("rerank wire", "2 KiB query × 1,000 documents", documents_for, wire),
        Family("image", "thin PNG (N×1)", thin_png, image),
        Family("image", "progressive JPEG, many scans", scans_for, image),
        Family("image", "PNG, many empty chunks", many_chunks_png, image),
    ]


def run(sizes: tuple[int, ...], tokenizer_path: str, only: str | None = None) -> dict[tuple[str, str], list[Row]]:
    out: dict[tuple[str, str], list[Row]] = {}
    for family in families(tokenizer_path):
        if only and only not in family.path:
            continue
        out[(family.path, family.name)] = [measure(family, size) for size in sizes]
    return out


def main() -> None:
    from bench.machine import describe
    from launcher import default_model

    ap = argparse.ArgumentParser(prog="python -m bench.costs", description=__doc__)
    ap.add_argument("--sizes", default=",".join(str(s) for s in FULL_SIZES), help="input sizes in bytes")
    ap.add_argument("--only", help="paths whose name contains this text")
    args = ap.parse_args()
    sizes = tuple(int(s) for s in args.sizes.split(","))
    print(f"machine: {describe()}")
    results = run(sizes, str(default_model.checkpoint() / "tokenizer.json"), args.only)
    print()
    print("| path | family | " + " | ".join(f"{s >> 10} KiB: ms, MiB" for s in sizes) + " | growth ×4 | outcome |")
    print("|---|---|" + "---:|" * len(sizes) + "---:|---|")
    for (path, name), rows in results.items():
        cells = " | ".join(f"{r.seconds * 1000:.1f}, {r.peak_mib:.0f}" for r in rows)
        print(f"| {path} | {name} | {cells} | {growth(rows):.1f} | {rows[-1].outcome} |")


if __name__ == "__main__":
    main()

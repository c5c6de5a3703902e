"""The use cases: embed items, tokenize texts, report readiness. Routes call these; no HTTP here."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from client.coalescer import Coalescer
from client.errors import APIError, bad_request, too_large
from client.images import ImageLoader
from client.protocol import EmbeddingRequest, MultimodalItem, TokenizeRequest
from client.registry import ModelRegistry
from client.settings import Settings
from client.tasks import all_or_cancel
from client.triton import ServedModel, TritonClient
from runtime.contract import IMAGE, INPUT_TYPE, INSTRUCTION, TEXT, TOKEN_IDS, TRUNCATE, input_type_of

log = logging.getLogger("client.service")


@dataclass(frozen=True)
class Item:
    """One input of a request: a text, an image (optionally with text), or pre-tokenised ids."""

    text: str | None = None
    image: str | None = None
    tokens: tuple[int, ...] | None = None
    where: str = "input"  # how error messages name it: `input` or `input[3]`


UNRESOLVED = "unknown"  # the metric label of requests that name no served model or fail before resolution


@dataclass
class Timings:
    """What the route reports of one request: the served model it resolved to, and seconds per stage."""

    model: str = UNRESOLVED
    image_fetch: float = 0.0
    triton: float = 0.0


def items_of(request: EmbeddingRequest, max_items: int) -> list[Item]:
    """The request's items, each non-empty, within the item cap."""
    raw = request.input
    if isinstance(raw, str):
        raw_items: list = [raw]
    elif raw and all(isinstance(x, int) for x in raw):
        raw_items = [raw]  # one token-id list: its ids are named input[j]
    else:
        raw_items = list(raw)
    one_id_list = len(raw_items) == 1 and raw_items[0] is raw
    if not raw_items:
        raise bad_request("input cannot be an empty list", param="input")
    if len(raw_items) > max_items:
        raise too_large(f"input has {len(raw_items)} items; the maximum is {max_items}", param="input")
    items = []
    for i, x in enumerate(raw_items):
        where = "input" if isinstance(raw, str) else f"input[{i}]"
        if isinstance(x, list):
            items.append(Item(tokens=tuple(x), where="input" if one_id_list else where))
            continue
        item = MultimodalItem(text=x) if isinstance(x, str) else x
        if item.text is not None and not item.text.strip():
            raise bad_request(f"{where} cannot be empty or whitespace only", param="input")
        if item.image is not None and not item.image.strip():
            raise bad_request(f"{where}.image cannot be empty", param="input")
        items.append(Item(text=item.text, image=item.image, where=where))
    return items


def field_names(extra: dict, shown: int = 8, width: int = 40) -> str:
    """Client-chosen field names for the log: escaped, each cut to `width`, at most `shown` of them."""
    names = [ascii(name[:width]) for name in list(extra)[:shown]]
    more = len(extra) - len(names)
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")


def check_token_ids(model: ServedModel, items: list[Item]) -> None:
    """Token ids within the model's vocabulary, the first bad one named by its position."""
    vocab = model.card.vocab_size
    if not vocab:
        return  # a repository exported before the contract carried it: the preprocessor checks
    for item in items:
        for j, x in enumerate(item.tokens or ()):
            if not 0 <= x < vocab:
                raise bad_request(f"{item.where}[{j}] is token id {x}, outside the vocabulary (0–{vocab - 1})", "input")


def check_token_options(request: EmbeddingRequest, items: list[Item]) -> None:
    """Token ids are embedded exactly as given: a prompt option would change nothing, so it is refused."""
    if not items or items[0].tokens is None:
        return
    for field in ("instruction", "input_type"):
        if getattr(request, field) is not None:
            raise bad_request(
                f"{field} does not apply to token ids, which are embedded exactly as given (the template is "
                "already in them when they come from /tokenize); drop it or send text",
                field,
            )


def check_modalities(model: ServedModel, items: list[Item]) -> None:
    for i, item in enumerate(items):
        if item.image is not None and not model.card.image_ensemble:
            raise bad_request(f"input[{i}] holds an image, and model {model.name!r} embeds text only", "input")
        if item.image is not None and item.text is not None and not model.card.fuses_modalities:
            raise bad_request(
                f"input[{i}] holds both text and an image; model {model.name!r} does not fuse "
                "modalities (it embeds each on its own tower): send them as separate items",
                "input",
            )


def check_dimensions(dimensions: int | None, model: ServedModel, allow_any: bool) -> None:
    """`dimensions` is the full size, a declared Matryoshka size or range, or any size when the operator allows it."""
    card = model.card
    if dimensions is None or dimensions == card.dimension:
        return
    if not 1 <= dimensions <= card.dimension:
        raise bad_request(f"dimensions must be between 1 and {card.dimension}, got {dimensions}", "dimensions")
    if not model.allows_dimensions(dimensions) and not allow_any:
        supported = [str(d) for d in card.matryoshka_dimensions]
        if card.matryoshka_min_dimension:
            supported.append(f"{card.matryoshka_min_dimension}–{card.dimension}")
        listing = f"; it supports {', '.join(supported)}" if supported else ""
        raise bad_request(
            f"model {model.name!r} is not Matryoshka-trained for dimensions={dimensions} (it returns "
            f"{card.dimension}{listing}); truncating would lose quality. The operator can allow any size, "
            "lossy, with EMBED_ALLOW_ANY_DIMENSIONS=true",
            "dimensions",
        )


def check_instruction(model: ServedModel, instruction: str | None) -> None:
    """An instruction for a model without a query template would change nothing: say so instead."""
    if instruction is not None and not model.card.query_template:
        raise bad_request(
            f"model {model.name!r} has no query template, so an instruction would change nothing; drop it "
            "(GET /v1/models says which models take one)",
            "instruction",
        )


def shorten(vectors: np.ndarray, dimensions: int | None) -> np.ndarray:
    """Matryoshka truncation: keep the first `dimensions` components and re-normalise."""
    if dimensions is None or dimensions == vectors.shape[1]:
        return vectors
    cut = vectors[:, :dimensions]
    return cut / np.maximum(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12)


def encode_rows(vectors: np.ndarray, encoding_format: str) -> list[list[float]] | list[str]:
    """Float lists, or base64 of little-endian float32 as the openai SDK expects."""
    if encoding_format == "base64":
        data = vectors.astype("<f4", copy=False)
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in data]
    return vectors.astype(np.float32, copy=False).tolist()


def accepted(options: dict[str, str], controls: tuple[str, ...]) -> dict[str, str]:
    """The request's options an ensemble takes (its card's controls)."""
    return {k: v for k, v in options.items() if k in controls}


def _token_bytes(tokens: tuple[int, ...]) -> bytes:
    return np.asarray(tokens, dtype="<i8").tobytes()


class EmbeddingService:
    def __init__(
        self,
        settings: Settings,
        triton: TritonClient,
        registry: ModelRegistry,
        images: ImageLoader,
        on_call: Callable[[str, int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.triton = triton
        # Embedding calls go through the coalescer (which joins them only with `coalesce`); tokenize and
        # readiness probes straight to Triton.
        self.calls = Coalescer(triton, settings.calls_in_flight, on_call, join=settings.coalesce)
        self.registry = registry
        self.images = images
        self.last_success: dict[str, float] = {}
        self._ready_probe: asyncio.Future | None = None
        self._ready_at = float("-inf")

    async def embed(self, request: EmbeddingRequest, timings: Timings | None = None) -> dict:
        timings = timings or Timings()
        if request.model_extra:
            log.info("ignoring unknown request fields: %s", field_names(request.model_extra))
        model = await self.registry.resolve(request.model)
        timings.model = model.name
        items = items_of(request, self.settings.max_items_per_request)
        self.images.check_count(sum(item.image is not None for item in items))  # before any text is sent
        check_token_options(request, items)
        check_modalities(model, items)
        check_token_ids(model, items)
        check_instruction(model, request.instruction)
        options = self.options(request)
        check_dimensions(request.dimensions, model, self.settings.allow_any_dimensions)
        try:
            vectors, tokens = await self._embed_items(model, items, options, timings)
        except APIError as exc:
            if exc.status == 503:  # readiness probes this model again now instead of trusting the TTL
                self.last_success.pop(model.name, None)
            raise
        vectors = shorten(vectors, request.dimensions)
        self.last_success[model.name] = time.monotonic()
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": row}
                for i, row in enumerate(encode_rows(vectors, request.encoding_format))
            ],
            "model": model.name,  # the canonical id, whatever name the request used
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def _timed(self, timings: Timings, stage: str, coro):
        start = time.perf_counter()
        try:
            return await coro
        finally:
            setattr(timings, stage, getattr(timings, stage) + time.perf_counter() - start)

    async def _embed_items(
        self, model: ServedModel, items: list[Item], options: dict[str, str], timings: Timings
    ) -> tuple[np.ndarray, int]:
        """Route each item to its path, run the paths concurrently, reassemble in input order."""
        text_at = [i for i, item in enumerate(items) if item.image is None and item.tokens is None]
        token_at = [i for i, item in enumerate(items) if item.tokens is not None]
        image_at = [i for i, item in enumerate(items) if item.image is not None]
        batch = model.max_batch_size

        card = model.card

        async def texts() -> tuple[np.ndarray, np.ndarray]:
            values = [items[i].text or "" for i in text_at]
            controls = accepted(options, card.controls)
            return await self._timed(timings, "triton", self.calls.embed(model.name, values, batch, controls, text_at))

        async def token_ids() -> tuple[np.ndarray, np.ndarray]:
            blobs = [_token_bytes(items[i].tokens or ()) for i in token_at]
            # Token ids bypass the template; TEXT is required by the ensemble, so it travels empty.
            plain = {TEXT: "", **accepted(options, (TRUNCATE,))}
            return await self._timed(
                timings, "triton", self.calls.embed(model.name, blobs, batch, plain, token_at, TOKEN_IDS)
            )

        async def images() -> tuple[np.ndarray, np.ndarray]:
            sources = [items[i].image or "" for i in image_at]
            start = time.perf_counter()
            async with self.images.fetched(sources, image_at) as blobs:  # held until Triton has them
                timings.image_fetch += time.perf_counter() - start
                controls, columns = accepted(options, card.image_controls), None
                texts = [items[i].text or "" for i in image_at]
                if TEXT in card.image_controls and any(texts):  # each item's text goes into its image's prompt
                    columns = {TEXT: texts}
                call = self.calls.embed(
                    card.image_ensemble, blobs, model.image_batch, controls, image_at, IMAGE, columns
                )
                return await self._timed(timings, "triton", call)

        jobs = [(at, job()) for at, job in ((text_at, texts), (token_at, token_ids), (image_at, images)) if at]
        results = await all_or_cancel(*(coro for _, coro in jobs))
        out = np.empty((len(items), model.card.dimension), dtype=np.float32)
        tokens = 0
        for (positions, _), (vectors, counts) in zip(jobs, results, strict=True):
            if vectors.shape != (len(positions), model.card.dimension):
                raise APIError(
                    500, f"Triton returned {vectors.shape} embeddings for {len(positions)} inputs", "internal_error"
                )
            out[positions] = vectors
            tokens += int(counts.sum())
        return out, tokens

    def options(self, request: EmbeddingRequest | TokenizeRequest) -> dict[str, str]:
        """The optional ensemble inputs this request sets."""
        try:
            input_type = input_type_of(request.input_type, request.instruction)
        except ValueError as exc:
            raise bad_request(str(exc), "instruction") from exc
        options = {}
        truncate = request.truncate or self.settings.default_truncate
        if truncate is not None:
            options[TRUNCATE] = truncate
        if request.input_type is not None or request.instruction is not None:
            options[INPUT_TYPE] = input_type
        if request.instruction is not None:
            if not request.instruction.strip():
                raise bad_request("instruction cannot be empty", "instruction")
            if len(request.instruction) > self.settings.max_instruction_chars:
                raise too_large(
                    f"instruction has {len(request.instruction)} characters; the maximum is "
                    f"{self.settings.max_instruction_chars}",
                    "instruction",
                )
            options[INSTRUCTION] = request.instruction
        return options

    async def tokenize(self, request: TokenizeRequest, timings: Timings | None = None) -> dict:
        """Token ids exactly as the encoder sees them: template, special tokens and truncation applied."""
        timings = timings or Timings()
        model = await self.registry.resolve(request.model)
        timings.model = model.name
        check_instruction(model, request.instruction)
        texts = [request.input] if isinstance(request.input, str) else list(request.input)
        if not texts:
            raise bad_request("input cannot be an empty list", param="input")
        if len(texts) > self.settings.max_items_per_request:
            raise too_large(
                f"input has {len(texts)} items; the maximum is {self.settings.max_items_per_request}", "input"
            )
        ids, counts = await self._timed(
            timings,
            "triton",
            self.triton.tokenize(f"{model.name}_preprocess", texts, model.max_batch_size, self.options(request)),
        )
        rows = [row[:n].tolist() for row, n in zip(ids, counts, strict=True)]
        return {
            "model": model.name,
            "tokens": rows,
            "counts": [len(r) for r in rows],
            "total": int(sum(len(r) for r in rows)),
            "max_tokens": model.card.max_tokens,
        }

    async def ready(self) -> list[str]:
        """Names of served models that answered an inference within `ready_ttl_s` (probing stale ones now).

        Open to anyone and outside the in-flight bound, so it is cheap to call: one probe at a time, its
        answer (or its error) reused for `ready_cache_s`, and concurrent callers share it.
        """
        probe = self._ready_probe
        if probe is None or (probe.done() and time.monotonic() - self._ready_at > self.settings.ready_cache_s):
            probe = self._ready_probe = asyncio.ensure_future(self._probe_ready())
            probe.add_done_callback(self._ready_done)
        return await asyncio.shield(probe)

    def _ready_done(self, probe: asyncio.Future) -> None:
        self._ready_at = time.monotonic()
        if not probe.cancelled():
            probe.exception()  # retrieved: each caller raises it for itself

    async def _probe_ready(self) -> list[str]:
        models = await self.registry.refresh()
        if not models:
            raise APIError(503, "no embedding model is ready in Triton", "service_unavailable", None, "no_model", True)
        now = time.monotonic()
        for model in models:
            if now - self.last_success.get(model.name, float("-inf")) > self.settings.ready_ttl_s:
                await self.triton.probe(model.name)
                self.last_success[model.name] = time.monotonic()
        return [m.name for m in models]

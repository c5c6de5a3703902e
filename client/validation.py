"""Request validation: everything a request is checked against before any Triton call, one
function per rule, each raising the OpenAI-format error that names the field."""

from __future__ import annotations

from dataclasses import dataclass

from client.errors import bad_request, too_large
from client.protocol import EmbeddingRequest, MultimodalItem, TokenizeRequest, one_id_list
from client.settings import Settings
from client.triton import ServedModel
from contract import INPUT_TYPE, INSTRUCTION, TRUNCATE, input_type_of


@dataclass(frozen=True)
class Item:
    """One input of a request: a text, an image (optionally with text), or pre-tokenised ids."""

    text: str | None = None
    image: str | None = None
    tokens: tuple[int, ...] | None = None
    where: str = "input"  # how error messages name it: `input` or `input[3]`


def items_of(request: EmbeddingRequest) -> list[Item]:
    """The request's items, each non-empty (the body parser has counted them against the cap)."""
    raw = request.input
    ids = one_id_list(raw)  # one token-id list: its ids are named input[j]
    raw_items: list = [raw] if isinstance(raw, str) or ids else list(raw)
    if not raw_items:
        raise bad_request("input cannot be an empty list", param="input")
    items = []
    for i, x in enumerate(raw_items):
        where = "input" if isinstance(raw, str) else f"input[{i}]"
        if isinstance(x, list):
            items.append(Item(tokens=tuple(x), where="input" if ids else where))
            continue
        item = MultimodalItem(text=x) if isinstance(x, str) else x
        if item.text is not None and not item.text.strip():
            raise bad_request(f"{where} cannot be empty or whitespace only", param="input")
        if item.image is not None and not item.image.strip():
            raise bad_request(f"{where}.image cannot be empty", param="input")
        items.append(Item(text=item.text, image=item.image, where=where))
    return items


def texts_of(request: TokenizeRequest) -> list[str]:
    """The texts to tokenize (the body parser has counted them against the cap)."""
    texts = [request.input] if isinstance(request.input, str) else list(request.input)
    if not texts:
        raise bad_request("input cannot be an empty list", param="input")
    return texts


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


def truncation(mode: str | None, settings: Settings) -> dict[str, str]:
    """The TRUNCATE control: the request's mode, else the adapter's default, else none (each model's own)."""
    mode = mode or settings.default_truncate
    return {TRUNCATE: mode} if mode else {}


def controls_of(request: EmbeddingRequest | TokenizeRequest, settings: Settings) -> dict[str, str]:
    """The per-request controls (optional ensemble inputs) this request sets, each checked."""
    try:
        input_type = input_type_of(request.input_type, request.instruction)
    except ValueError as exc:
        raise bad_request(str(exc), "instruction") from exc
    options = truncation(request.truncate, settings)
    if request.input_type is not None or request.instruction is not None:
        options[INPUT_TYPE] = input_type
    if request.instruction is not None:
        if not request.instruction.strip():
            raise bad_request("instruction cannot be empty", "instruction")
        if len(request.instruction) > settings.max_instruction_chars:
            raise too_large(
                f"instruction has {len(request.instruction)} characters; the maximum is "
                f"{settings.max_instruction_chars}",
                "instruction",
            )
        options[INSTRUCTION] = request.instruction
    return options

"""A tiny e5-mistral-7b-instruct."""

from __future__ import annotations

from pathlib import Path

from tests.tiny.common import bpe, decoder_sizes, save_model, save_tokenizer

KEY, REAL = "e5", "e5-mistral-7b-instruct"  # `python -m tests.tiny e5` writes a tiny e5-mistral-7b-instruct


def mistral(path: Path, layers: int = 2, hidden: int = 64, positions: int = 512) -> Path:
    """An e5-mistral-shaped checkpoint: `<s>` from the post-processor, `</s>` only if the server adds it."""
    from tokenizers import processors
    from transformers import MistralConfig, MistralModel

    tok = bpe(["<unk>", "<s>", "</s>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    vocab = save_tokenizer(tok, path, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>")
    config = MistralConfig(
        **decoder_sizes(vocab, hidden, layers, positions),
        bos_token_id=tok.token_to_id("<s>"),
        eos_token_id=tok.token_to_id("</s>"),
        pad_token_id=tok.token_to_id("</s>"),
    )
    save_model(MistralModel(config), path)
    return path


build = mistral

"""A tiny Qwen3-Reranker: a `Qwen3ForCausalLM` (its LM head untied, so the score reads the head's own
rows) with the chat tokens and the `yes` / `no` tokens its score reads; no post-processor (the
reranker's tokenizer adds no special token), no sentence-transformers files."""

from __future__ import annotations

from pathlib import Path

from tests.tiny.common import bpe, decoder_sizes, save_model, save_tokenizer

KEY, REAL = "qwen3-reranker", "Qwen3-Reranker-0.6B"  # `python -m tests.tiny qwen3-reranker`


def qwen3_reranker(path: Path, layers: int = 2, hidden: int = 64, positions: int = 8192) -> Path:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tok = bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok.add_tokens(["yes", "no"])
    end = tok.token_to_id("<|endoftext|>")
    vocab = save_tokenizer(tok, path, eos_token="<|im_end|>", pad_token="<|endoftext|>", padding_side="left")
    sizes = decoder_sizes(vocab, hidden, layers, positions)
    config = Qwen3Config(
        **sizes,
        head_dim=hidden // sizes["num_attention_heads"],
        bos_token_id=end,
        eos_token_id=end,
        tie_word_embeddings=False,
    )
    save_model(Qwen3ForCausalLM(config), path)
    return path


build = qwen3_reranker

"""A tiny gte-Qwen2-7B-instruct (or a plain Qwen2 with `gte=False`)."""

from __future__ import annotations

import json
from pathlib import Path

from export.families.base import WEB_SEARCH_TASK
from tests.tiny.common import bpe, decoder_sizes, save_model, save_tokenizer

KEY, REAL = "gte", "gte-Qwen2-7B-instruct"  # `python -m tests.tiny gte` writes a tiny gte-Qwen2-7B-instruct


def qwen2(path: Path, gte: bool = True, layers: int = 2, hidden: int = 64, positions: int = 512) -> Path:
    """A Qwen2 checkpoint; `gte=True` adds what gte-Qwen2-7B-instruct carries (auto_map → modeling_qwen, ST prompts)."""
    from transformers import Qwen2Config, Qwen2Model

    tok = bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    eos = tok.token_to_id("<|endoftext|>")
    vocab = save_tokenizer(tok, path, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    config = Qwen2Config(
        **decoder_sizes(vocab, hidden, layers, positions),
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    save_model(Qwen2Model(config), path)
    if gte:
        cfg = json.loads((path / "config.json").read_text())
        cfg["auto_map"] = {
            "AutoModel": "modeling_qwen.Qwen2Model",
            "AutoModelForCausalLM": "modeling_qwen.Qwen2ForCausalLM",
        }
        (path / "config.json").write_text(json.dumps(cfg, indent=2))
        (path / "modeling_qwen.py").write_text("# stands for the authors' bidirectional Qwen2Model; never executed\n")
        (path / "config_sentence_transformers.json").write_text(
            json.dumps(
                {
                    "prompts": {
                        "query": f"Instruct: {WEB_SEARCH_TASK}\nQuery: ",
                        "document": "",
                    }
                }
            )
        )
    return path


build = qwen2

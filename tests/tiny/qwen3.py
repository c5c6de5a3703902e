"""A tiny Qwen3-Embedding: a Qwen3 backbone (q/k RMSNorm) in a sentence-transformers folder, with the
real tokenizer's framing (post-processor `$A <|endoftext|>`, eos_token `<|im_end|>`, left padding)."""

from __future__ import annotations

import json
from pathlib import Path

from export.families.base import WEB_SEARCH_TASK
from tests.tiny.common import bpe, decoder_sizes, save_model, save_tokenizer

KEY, REAL = "qwen3", "Qwen3-Embedding-0.6B"  # `python -m tests.tiny qwen3` writes a tiny Qwen3-Embedding-0.6B


def qwen3(path: Path, layers: int = 2, hidden: int = 64, positions: int = 512) -> Path:
    from tokenizers import processors
    from transformers import Qwen3Config, Qwen3Model

    tok = bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    end = tok.token_to_id("<|endoftext|>")
    tok.post_processor = processors.TemplateProcessing(
        single="$A <|endoftext|>", pair="$A <|endoftext|> $B:1 <|endoftext|>:1", special_tokens=[("<|endoftext|>", end)]
    )
    vocab = save_tokenizer(tok, path, eos_token="<|im_end|>", pad_token="<|endoftext|>", padding_side="left")
    sizes = decoder_sizes(vocab, hidden, layers, positions)
    config = Qwen3Config(**sizes, head_dim=hidden // sizes["num_attention_heads"], bos_token_id=end, eos_token_id=end)
    save_model(Qwen3Model(config), path)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (path / "modules.json").write_text(json.dumps(modules, indent=2))
    (path / "1_Pooling").mkdir(exist_ok=True)
    modes = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens", "lasttoken")
    pooling = {f"pooling_mode_{m}": m == "lasttoken" for m in modes}
    (path / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": hidden, **pooling, "include_prompt": True}, indent=2)
    )
    (path / "2_Normalize").mkdir(exist_ok=True)
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": positions, "do_lower_case": False}))
    prompts = {"query": f"Instruct: {WEB_SEARCH_TASK}\nQuery:", "document": ""}
    (path / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": prompts, "default_prompt_name": None, "similarity_fn_name": "cosine"}, indent=2)
    )
    return path


build = qwen3

"""What every tiny checkpoint shares: the tokenizer corpus, the BPE trainer, the decoder shape, the saver."""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "Triton serves embeddings from ONNX Runtime and TensorRT engines.",
    "The quick brown fox jumps over the lazy dog.",
    "Instruct: Given a web search query, retrieve relevant passages that answer the query",
    "Query: how do I bake bread at home? Documents describe flour, water, salt and yeast.",
    "Ünïcödé, 中文, 日本語, emoji 🚀 and numbers 0123456789 appear in real traffic.",
    "def f(x): return x ** 2  # code and punctuation: {}, [], (), <>, /, \\",
]


def bpe(special: list[str], vocab_size: int = 600):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,  # its bars print blank lines where there is no terminal
    )
    tok.train_from_iterator(CORPUS * 20, trainer)
    return tok


def save_tokenizer(tok, path: Path, **special: str) -> int:
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=tok, **special)
    hf.save_pretrained(str(path))
    return len(hf)


def decoder_sizes(vocab: int, hidden: int, layers: int, positions: int) -> dict[str, int]:
    """The small shape every tiny decoder shares (grouped-query attention: 4 heads, 2 KV heads)."""
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": positions,
    }


def save_model(model, path: Path) -> None:
    import torch

    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)  # larger than the default init, so positions and attention visibly matter
    model.save_pretrained(str(path))


def xlmr_tokenizer(path: Path) -> int:
    """An XLM-R-style tokenizer saved in `path` (`<s> … </s>`, pairs `<s> q </s></s> d </s>`, ids 0-3 the
    specials as XLM-R's, pad 1, no token types); its size."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok = bpe(["<s>", "<pad>", "</s>", "<unk>"])
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_input_names=["input_ids", "attention_mask"],
    )
    hf.save_pretrained(str(path))
    return len(hf)

"""Tiny random checkpoints of the supported architectures, for tests and benchmarks.

The Hugging Face hub is out of reach, so tests build these locally: a few layers, a
small hidden size, and a byte-level BPE tokenizer trained on a built-in corpus that
carries each family's special tokens, saved exactly as a real checkpoint folder is.
"""

from __future__ import annotations

import json
from pathlib import Path

from export.specs import WEB_SEARCH_TASK

CORPUS = [
    "Triton serves embeddings from ONNX Runtime and TensorRT engines.",
    "The quick brown fox jumps over the lazy dog.",
    "Instruct: Given a web search query, retrieve relevant passages that answer the query",
    "Query: how do I bake bread at home? Documents describe flour, water, salt and yeast.",
    "Ünïcödé, 中文, 日本語, emoji 🚀 and numbers 0123456789 appear in real traffic.",
    "def f(x): return x ** 2  # code and punctuation: {}, [], (), <>, /, \\",
]


def _bpe(special: list[str], vocab_size: int = 600):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS * 20, trainer)
    return tok


def _save_tokenizer(tok, path: Path, **special: str) -> int:
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=tok, **special)
    hf.save_pretrained(str(path))
    return len(hf)


def _decoder_sizes(vocab: int, hidden: int, layers: int, positions: int) -> dict[str, int]:
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


def mistral(path: Path, layers: int = 2, hidden: int = 64, positions: int = 512) -> Path:
    """An e5-mistral-shaped checkpoint: `<s>` from the post-processor, `</s>` only if the server adds it."""
    from tokenizers import processors
    from transformers import MistralConfig, MistralModel

    tok = _bpe(["<unk>", "<s>", "</s>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    vocab = _save_tokenizer(tok, path, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>")
    config = MistralConfig(
        **_decoder_sizes(vocab, hidden, layers, positions),
        bos_token_id=tok.token_to_id("<s>"),
        eos_token_id=tok.token_to_id("</s>"),
        pad_token_id=tok.token_to_id("</s>"),
    )
    _save_model(MistralModel(config), path)
    return path


def qwen2(path: Path, gte: bool = True, layers: int = 2, hidden: int = 64, positions: int = 512) -> Path:
    """A Qwen2 checkpoint; `gte=True` adds what gte-Qwen2-7B-instruct carries (auto_map → modeling_qwen, ST prompts)."""
    from transformers import Qwen2Config, Qwen2Model

    tok = _bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    eos = tok.token_to_id("<|endoftext|>")
    vocab = _save_tokenizer(tok, path, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    config = Qwen2Config(
        **_decoder_sizes(vocab, hidden, layers, positions),
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    _save_model(Qwen2Model(config), path)
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


def _save_model(model, path: Path) -> None:
    import torch

    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)  # larger than the default init, so positions and attention visibly matter
    model.save_pretrained(str(path))


def clip(path: Path, image_size: int = 56, patch: int = 14, hidden: int = 32, projection: int = 16) -> Path:
    """A CLIP checkpoint: `<|startoftext|> … <|endoftext|>`, 77 positions, small towers, CLIP image processing."""
    from tokenizers import processors
    from transformers import CLIPConfig, CLIPModel

    tok = _bpe(["<|startoftext|>", "<|endoftext|>"])
    bos, eos = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|endoftext|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", bos), ("<|endoftext|>", eos)]
    )
    vocab = _save_tokenizer(
        tok,
        path,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tower = {"hidden_size": hidden, "intermediate_size": hidden * 2, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = CLIPConfig(
        text_config={
            **tower,
            "vocab_size": vocab,
            "max_position_embeddings": 77,
            "bos_token_id": bos,
            "eos_token_id": eos,
            "pad_token_id": eos,
        },
        vision_config={**tower, "image_size": image_size, "patch_size": patch},
        projection_dim=projection,
    )
    _save_model(CLIPModel(config), path)
    (path / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "CLIPImageProcessor",
                "do_resize": True,
                "size": {"shortest_edge": image_size},
                "resample": 3,
                "do_center_crop": True,
                "crop_size": {"height": image_size, "width": image_size},
                "do_rescale": True,
                "rescale_factor": 1 / 255,
                "do_normalize": True,
                "do_convert_rgb": True,
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
            },
            indent=2,
        )
    )
    return path


QWEN2_VL_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
]


def qwen2_vl(path: Path, min_pixels: int = 4 * 28 * 28, max_pixels: int = 16 * 28 * 28) -> Path:
    """A gme-Qwen2-VL-shaped checkpoint: tiny vision tower (patch 14, merge 2) and Qwen2 LM, Qwen2-VL special tokens."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    tok = _bpe(QWEN2_VL_SPECIALS)
    ids = {s: tok.token_to_id(s) for s in QWEN2_VL_SPECIALS}
    eos = ids["<|endoftext|>"]
    vocab = _save_tokenizer(tok, path, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": vocab,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
            "bos_token_id": eos,
            "eos_token_id": eos,
            "pad_token_id": eos,
        },
        vision_config={
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": 64,
            "num_heads": 4,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "in_channels": 3,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|image_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    _save_model(Qwen2VLForConditionalGeneration(config), path)
    (path / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "Qwen2VLImageProcessor",
                "min_pixels": min_pixels,
                "max_pixels": max_pixels,
                "patch_size": 14,
                "temporal_patch_size": 2,
                "merge_size": 2,
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
            },
            indent=2,
        )
    )
    return path


# `python -m export.tiny FAMILY FOLDER`: try a family end to end offline, without its real weights.
BUILDERS = {
    "e5": ("e5-mistral-7b-instruct", mistral),
    "gte": ("gte-Qwen2-7B-instruct", qwen2),  # the gte recipe is qwen2's default
    "gme": ("gme-Qwen2-VL-2B-Instruct", qwen2_vl),
    "clip": ("clip-vit-large-patch14-336", clip),
}


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    ap = argparse.ArgumentParser(
        prog="python -m export.tiny",
        description="Write a tiny random checkpoint of a supported family (same architecture, tokenizer "
        "special tokens and files as the real one; random weights, so the vectors mean nothing).",
    )
    ap.add_argument("family", choices=sorted(BUILDERS))
    ap.add_argument("folder", type=Path, nargs="?", help="where to write it (default: checkpoints/<real name>-tiny)")
    args = ap.parse_args(argv)
    real, build = BUILDERS[args.family]
    folder = (args.folder or Path("checkpoints") / f"{real}-tiny").resolve()
    from export.build import quiet_libraries

    quiet_libraries()
    build(folder)
    name = folder.name
    print(f"wrote a tiny {real} to {folder}\nserve it:  make serve MODEL={folder} NAME={name}", file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

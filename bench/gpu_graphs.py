"""`python -m bench.gpu_graphs`: the exported graphs themselves on a CUDA GPU, in bf16 and fp16.

For each family (`export/families/`) this builds the torch modules that `python -m export` traces,
from the family's own declaration (its towers' graphs, pooling and attention) with random weights,
either in the real checkpoints' shapes the family declares (`--sizes real`) or in its tiny test
checkpoint's (`--sizes tiny`), and reports:

- agreement: the same graph in fp32 (TF32 off) against its bf16 / fp16 copy, on ragged inputs
  (right-padded rows of mixed length; for GME, several image sizes packed in one call), as the
  minimum cosine over rows and the largest absolute difference;
- speed: eager PyTorch (SDPA attention) at a few batch shapes, timed with CUDA events (median
  of `--reps` after warm-up): items/s, tokens/s, and model FLOPs utilisation. Model FLOPs are
  counted by `torch.utils.flop_counter` on one row or one image and multiplied by the rows, so
  they are the useful work: padding and, for packed GME images, the masked-out attention
  between images are not counted, while the time includes them.

It is not the TensorRT engine: `python -m bench --gpu` measures the served engines where a GPU
host runs the NGC Triton image. This script needs only PyTorch and transformers, so it runs on
any CUDA machine, and it answers two questions before an export: does the reduced precision keep
the embeddings, and what the model's arithmetic alone achieves on the card. Random weights carry
no activation outliers, so fp16 agreement here does not prove fp16 is safe for real weights
(Qwen2's are known to overflow in fp16; see the README).

    python -m bench.gpu_graphs --sizes tiny,real --out build/bench
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.mfu import mfu, peak_tflops
from export.families import families
from export.families.base import Family
from export.towers.fixed_image import FixedImageTower
from export.towers.patch_image import PatchImageTower
from export.towers.text import TextTower
from graphs.settings import GraphSettings
from runtime.qwen2vl import vision_positions
from tests import tiny

Inputs = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Tower:
    """One graph of a family, how to feed it, and the shapes it is timed at."""

    name: str
    graph: torch.nn.Module
    ragged: Callable[[torch.Generator, str], Inputs]  # agreement inputs
    full: Callable[[int, int, str], tuple[Inputs, int]]  # (rows, length) → inputs, tokens
    shapes: tuple[tuple[int, int], ...]  # (rows, length) pairs to time
    unit: str  # what a "length" counts: tokens, patches per image, or the fixed image


@dataclass(frozen=True)
class Subject:
    """One model to measure: a family's real architecture, or its tiny test checkpoint."""

    name: str
    family: Family
    model_class: str
    config: Callable[[argparse.Namespace, Path], object]  # (args, workdir) → the transformers config
    attention: str


# ---- inputs ----------------------------------------------------------------------------------


def _ids(gen: torch.Generator, vocab: int, rows: int, length: int) -> torch.Tensor:
    high = vocab - 1000 if vocab > 4000 else vocab  # clear of the special tokens at the top of large vocabularies
    return torch.randint(10, high, (rows, length), generator=gen)


def text_inputs(vocab: int, eos: int | None, extra: Callable[[], Inputs] = dict):
    """Ragged and full text batches: random ids, EOS at each row's end (where pooling looks for it)."""

    def ragged(gen: torch.Generator, device: str, rows: int = 8, length: int = 192) -> Inputs:
        ids = _ids(gen, vocab, rows, length)
        lengths = torch.linspace(length // 8, length, rows).long()
        mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
        if eos is not None:
            ids[torch.arange(rows), lengths - 1] = eos
        return {"input_ids": ids.to(device), "attention_mask": mask.to(device), **extra()}

    def full(rows: int, length: int, device: str) -> tuple[Inputs, int]:
        ids = _ids(torch.Generator().manual_seed(rows * length), vocab, rows, length)
        if eos is not None:
            ids[:, -1] = eos
        feeds = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device), **extra()}
        return feeds, rows * length

    return ragged, full


def clip_image_inputs(size: int, patch: int):
    tokens = (size // patch) ** 2 + 1

    def ragged(gen: torch.Generator, device: str) -> Inputs:
        return {"pixel_values": torch.randn((6, 3, size, size), generator=gen).to(device)}

    def full(rows: int, _: int, device: str) -> tuple[Inputs, int]:
        gen = torch.Generator().manual_seed(rows)
        return {"pixel_values": torch.randn((rows, 3, size, size), generator=gen).to(device)}, rows * tokens

    return ragged, full


def _packed(grids: list[tuple[int, int]], merge: int, gen: torch.Generator, device: str) -> Inputs:
    """Images of the given patch grids packed into one call, as the GME vision host packs them."""
    n = sum(h * w for h, w in grids)
    positions = np.concatenate([vision_positions(h, w, merge) for h, w in grids])
    segments = np.concatenate([np.full(h * w, i, dtype=np.int64) for i, (h, w) in enumerate(grids)])
    return {
        "pixel_values": torch.randn((n, 1176), generator=gen).to(device),
        "position_ids": torch.from_numpy(positions).to(device),
        "segment_ids": torch.from_numpy(segments).to(device),
    }


def gme_vision_inputs(merge: int, ragged_grids: list[tuple[int, int]]):
    def ragged(gen: torch.Generator, device: str) -> Inputs:
        return _packed(ragged_grids, merge, gen, device)

    def full(images: int, side: int, device: str) -> tuple[Inputs, int]:
        return _packed([(side, side)] * images, merge, torch.Generator().manual_seed(images), device), images * side**2

    return ragged, full


# ---- the families ----------------------------------------------------------------------------

TEXT_SHAPES = ((32, 128), (32, 512))
DECODER_SHAPES = ((32, 128), (32, 512), (8, 2048))
# GME images packed per vision call: (images, patch-grid side); 32×32 patches is the authors' smallest image
# (256 tokens), 64×64 near their largest (1,280 tokens = 5,120 patches).
GME_VISION_SHAPES = ((1, 32), (2, 32), (4, 32), (6, 32), (8, 32), (1, 64), (2, 64))


def towers(subject: Subject, model: torch.nn.Module, config) -> list[Tower]:
    """The family's own graphs (as `python -m export` traces them), with inputs and shapes by tower kind."""
    family = subject.family
    if family.decoder:
        model.config.is_causal = subject.attention == "causal"  # as export/build.py sets it
    text = getattr(config, family.text_config) if family.text_config else config
    settings = GraphSettings(family.pooling, family.normalize, getattr(config, "image_token_id", None))
    out = []
    for tower in family.towers:
        graph = tower.graph(model, settings)
        if isinstance(tower, TextTower):
            extra = (
                (lambda: {"image_embeds": torch.zeros((0, text.hidden_size), device=model.device)})
                if (tower.image_features)
                else dict
            )
            ragged, full = text_inputs(text.vocab_size, getattr(text, "eos_token_id", None), extra)
            limit = family.max_length or text.max_position_embeddings
            if limit < 128:  # a short-context tower (CLIP's 77 tokens): its full length, small and large batches
                ragged = functools.partial(ragged, length=limit)
                shapes: tuple[tuple[int, int], ...] = ((32, limit), (256, limit))
            else:
                shapes = DECODER_SHAPES if family.decoder or tower.image_features else TEXT_SHAPES
            out.append(Tower("text", graph, ragged, full, shapes, "tokens"))
        elif isinstance(tower, FixedImageTower):
            ragged, full = clip_image_inputs(config.vision_config.image_size, config.vision_config.patch_size)
            out.append(Tower("image", graph, ragged, full, ((8, 0), (32, 0)), "image"))
        elif isinstance(tower, PatchImageTower):
            merge = config.vision_config.spatial_merge_size
            ragged, full = gme_vision_inputs(merge, [(16, 16), (20, 28), (32, 32), (8, 44)])
            out.append(Tower("image", graph, ragged, full, GME_VISION_SHAPES, "patches"))
    return out


def subjects() -> dict[str, Subject]:
    """Every family's real architectures, and every tiny test checkpoint, by name."""
    import transformers

    found: dict[str, Subject] = {}
    for family in families():
        for arch in family.architectures:

            def real(args: argparse.Namespace, _: Path, arch=arch, family=family):
                config = dict(arch.config)
                if args.decoder_layers and family.decoder:  # cut the large decoders to fit a quick run
                    config["num_hidden_layers"] = args.decoder_layers
                return getattr(transformers, arch.model_class).config_class(**config)

            found[arch.name] = Subject(arch.name, family, arch.model_class, real, arch.attention or family.attention)
    for module in tiny.builders().values():
        real_name = f"{module.REAL}"
        if real_name not in found:
            continue
        base = found[real_name]

        def small(_: argparse.Namespace, workdir: Path, module=module, base=base):
            cls = getattr(transformers, base.model_class)
            return cls.config_class.from_pretrained(str(module.build(workdir / module.REAL)))

        found[f"{real_name} (tiny)"] = Subject(real_name, base.family, base.model_class, small, base.attention)
    return found


# ---- measuring -------------------------------------------------------------------------------


def median_seconds(fn: Callable[[], object], device: str, warmup: int, reps: int) -> float:
    """Median wall time of `fn()` (CUDA events on a GPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _attention_flops(query_shape, key_shape, value_shape, *_args, out_shape=None, **_kwargs) -> int:
    """One fused attention's FLOPs, q·kᵀ and then p·v for every query head, grouped-query or not: a key/value
    head serves several query heads. torch's own formula asserts equal head counts (transformers passes
    grouped heads to CUDA's kernels with `enable_gqa`), and its CPU kernel has no formula (counted 0)."""
    batch, heads, queries, width = query_shape
    keys, value_width = key_shape[-2], value_shape[-1]
    return 2 * batch * heads * queries * keys * (width + value_width)


def count_flops(graph: torch.nn.Module, feeds: Inputs) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    fused = (
        aten._scaled_dot_product_flash_attention,
        aten._scaled_dot_product_efficient_attention,
        aten._scaled_dot_product_cudnn_attention,
        aten._scaled_dot_product_flash_attention_for_cpu,
    )
    counter = FlopCounterMode(display=False, custom_mapping=dict.fromkeys(fused, _attention_flops))
    with counter, torch.inference_mode():
        graph(**feeds)
    return counter.get_total_flops()


def _agreement(reference: torch.Tensor, candidate: torch.Tensor) -> tuple[float, float]:
    ref, cand = reference.double(), candidate.double()
    cos = torch.nn.functional.cosine_similarity(ref, cand, dim=-1)
    return float(cos.min()), float((ref - cand).abs().max())


def _build(subject: Subject, args: argparse.Namespace, workdir: Path) -> tuple[torch.nn.Module, object]:
    import transformers

    cls = getattr(transformers, subject.model_class)
    config = subject.config(args, workdir)
    torch.manual_seed(0)
    with torch.device(args.device):
        model = cls(config).eval()
    return model, config


def measure(subject: Subject, size: str, args: argparse.Namespace, peak: float | None, workdir: Path) -> list[dict]:
    rows: list[dict] = []
    model, config = _build(subject, args, workdir)
    params = sum(p.numel() for p in model.parameters())
    for tower in towers(subject, model, config):
        if tower.name not in args.towers:
            continue
        gen = torch.Generator().manual_seed(1)
        ragged = tower.ragged(gen, args.device)
        with torch.inference_mode():
            reference = tower.graph(**ragged).float()
        shape_feeds = [(shape, *tower.full(*shape, args.device)) for shape in tower.shapes]
        # Useful FLOPs: one row (or one image) counted, times the rows.
        unit_flops = {s: count_flops(tower.graph, tower.full(1, s[1], args.device)[0]) for s in tower.shapes}
        for dtype in args.dtypes:
            graph = copy.deepcopy(tower.graph).to(getattr(torch, dtype))
            with torch.inference_mode():
                min_cos, max_err = _agreement(reference, graph(**ragged).float())
            for shape, feeds, tokens in shape_feeds:
                if args.device == "cuda":
                    torch.cuda.reset_peak_memory_stats()

                def run(graph: torch.nn.Module = graph, feeds: Inputs = feeds) -> None:
                    with torch.inference_mode():
                        graph(**feeds)

                seconds = median_seconds(run, args.device, args.warmup, args.reps)
                flops = unit_flops[shape] * shape[0]
                row = {
                    "family": subject.name,
                    "size": size,
                    "parameters": params,
                    "tower": tower.name,
                    "dtype": dtype,
                    "rows": shape[0],
                    "length": shape[1],
                    "unit": tower.unit,
                    "seconds": seconds,
                    "items_per_s": shape[0] / seconds,
                    "tokens_per_s": tokens / seconds,
                    "model_tflops": flops / seconds / 1e12,
                    "mfu": mfu(flops / seconds, peak) if peak else None,
                    "min_cosine_vs_fp32": min_cos,
                    "max_abs_vs_fp32": max_err,
                    "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else None,
                }
                rows.append(row)
                print(_line(row), flush=True)
            del graph
    del model
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return rows


HEAD = (
    f"{'family':27} {'size':4} {'tower':5} {'dtype':8} {'shape':>11} {'items/s':>9} {'tokens/s':>10} "
    f"{'TFLOP/s':>8} {'MFU':>6} {'min cos':>9} {'max |Δ|':>8}"
)


def _line(r: dict) -> str:
    shape = f"{r['rows']}×{r['length']}" if r["unit"] != "image" else f"{r['rows']} img"
    mfu_text = f"{r['mfu']:6.1%}" if r["mfu"] is not None else f"{'-':>6}"
    return (
        f"{r['family']:27} {r['size']:4} {r['tower']:5} {r['dtype']:8} {shape:>11} {r['items_per_s']:9.1f} "
        f"{r['tokens_per_s']:10.0f} {r['model_tflops']:8.1f} {mfu_text} {r['min_cosine_vs_fp32']:9.6f} "
        f"{r['max_abs_vs_fp32']:8.2e}"
    )


def matmul_ceiling(device: str) -> float:
    """Measured bf16 TFLOP/s of one 8192³ product on random data: the card's practical ceiling."""
    a, b = (torch.randn((8192, 8192), device=device, dtype=torch.bfloat16) for _ in range(2))
    seconds = median_seconds(lambda: a @ b, device, 3, 10)
    return 2 * 8192**3 / seconds / 1e12


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", help="comma-separated real checkpoint names (default: every family's)")
    ap.add_argument("--sizes", default="tiny,real", help="tiny (the test checkpoints), real (the real shapes)")
    ap.add_argument("--dtypes", default="bfloat16,float16")
    ap.add_argument("--towers", default="text,image", help="which towers to measure")
    ap.add_argument("--decoder-layers", type=int, help="cut the 7B decoders to this many layers (default: all)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--peak-tflops", type=float, help="the card's dense fp16/bf16 peak (default: by its name)")
    ap.add_argument("--out", type=Path, default=Path("build/bench"))
    args = ap.parse_args(argv)
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    args.towers = [t for t in args.towers.split(",") if t]
    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 reference is fp32
    torch.backends.cudnn.allow_tf32 = False
    peak, card, ceiling = None, "cpu", None
    if args.device == "cuda":
        peak, card = peak_tflops(args.peak_tflops)
        ceiling = matmul_ceiling(args.device)
        print(f"{card}: datasheet peak {peak:.0f} TFLOP/s dense bf16; measured 8192³ bf16 product {ceiling:.0f}")
    print(f"torch {torch.__version__}\n\n{HEAD}\n{'-' * len(HEAD)}", flush=True)
    rows: list[dict] = []
    found = subjects()
    names = [n for n in (args.families or "").split(",") if n] or [n for n in found if not n.endswith("(tiny)")]
    with tempfile.TemporaryDirectory() as tmp:
        for size in (s for s in args.sizes.split(",") if s):
            for name in names:
                subject = found.get(name if size == "real" else f"{name} (tiny)")
                if subject is None:  # no tiny checkpoint of it (all-MiniLM-L6-v2 is real and small)
                    continue
                try:
                    rows += measure(subject, size, args, peak, Path(tmp))
                except Exception:  # one family's failure must not lose the others' figures
                    traceback.print_exc()
                    print(f"{name} ({size}) failed; going on", flush=True)
    print(f"\n{HEAD}\n{'-' * len(HEAD)}")
    for r in rows:
        print(_line(r))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench-gpu-graphs-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(
        json.dumps({"card": card, "peak_tflops": peak, "measured_bf16_tflops": ceiling, "rows": rows}, indent=2)
    )
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()

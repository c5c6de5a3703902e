"""`python -m bench.gpu_served`: the stack served on a GPU through real Triton (`--target torch`), measured.

What `bench/device/run.sh` runs on the lent GPU machine (and, to test it, here with `--device cpu
--sizes tiny`). Three measurements, each through `tritonserver` (the `nvidia-pytriton` wheel's CUDA
build) and the adapter, on models exported with `--target torch --gpu`:

- **A 7B decoder**: e5-mistral-7b-instruct's real configuration with random weights (built on the
  machine: the hub is unreachable), documents of 512 tokens sent as token ids, 32 per request at
  concurrency 8: served tokens/s against the same graph in-process on the same GPU (eager PyTorch,
  full batches of 32 × 512), and each as model FLOPs utilisation of the card's dense peak. Goal:
  served ≥ 0.9 × in-process.
- **A small model at a high request rate**: all-MiniLM-L6-v2, one 1–3 word query per request at
  concurrency 64 and 256, with 1, 2, 4 and 8 adapter workers (`bench/request_rate.py`), with the CPU
  time per request of each serving process.
- **GME**: gme-Qwen2-VL-2B-Instruct's real configuration with random weights, one image per request at
  the authors' resize bounds (256…1280 × 28² pixels), concurrency 8: images/s through the whole path
  (preprocessor, vision tower, language model).

Writes `results.json` and `results.md` (the tables for docs/benchmarks.md) to `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

from bench import cpu, machine, request_rate, runners
from bench.mfu import mfu, peak_tflops
from export.build import Progress, export
from export.families import families
from export.families.base import Architecture
from export.request import ExportRequest
from launcher.stack import running_stack
from launcher.tritonserver import pytriton_dir

ROOT = Path(__file__).resolve().parent.parent
DOC_TOKENS, DOCS_PER_REQUEST, DOC_CONCURRENCY = 512, 32, 8
CONFIGURATION = {"real": "real configuration, random weights", "tiny": "the tests' tiny configuration"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu_served", description=__doc__)
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--sizes", choices=("real", "tiny"), default="real", help="real shapes, or the tiny test ones")
    # The sure, fast one first: a run cut short still brings MiniLM back. `--only minilm,decoder` then
    # `--only gme` splits the run in two device calls.
    ap.add_argument("--only", default="minilm,decoder,gme", help="which measurements, comma-separated, in order")
    ap.add_argument("--requests", type=int, default=48, help="decoder: requests of 32 documents (served)")
    ap.add_argument("--images", type=int, default=96, help="GME: images (served)")
    ap.add_argument("--workers", default="1,2,4,8", help="MiniLM: adapter worker counts")
    ap.add_argument("--concurrency", default="64,256", help="MiniLM: concurrency")
    ap.add_argument("-n", type=int, default=4000, help="MiniLM: requests per point")
    ap.add_argument("--peak-tflops", type=float, help="the card's dense bf16/fp16 peak (default: by its name)")
    ap.add_argument("--workdir", type=Path, default=ROOT / "build" / "gpu-served")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "device-out")
    return ap.parse_args(argv)


def bundle() -> Path:
    """What run.sh carried (`EMBED_DEVICE_BUNDLE`, as run.sh reads it)."""
    return Path(os.environ.get("EMBED_DEVICE_BUNDLE") or ROOT / "build" / "device")


# ---- checkpoints ------------------------------------------------------------------------------


def token_ids(config: dict) -> dict:
    """Only a config's token ids, sub-configs included: what a checkpoint's tokenizer decides."""
    found: dict = {}
    for key, value in config.items():
        if isinstance(value, dict):
            if inner := token_ids(value):
                found[key] = inner
        elif isinstance(key, str) and key.endswith(("token_id", "token_ids")):
            found[key] = value
    return found


def _overlay(base: dict, over: dict) -> dict:
    merged = dict(base)
    for key, value in over.items():
        merged[key] = (
            _overlay(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        )
    return merged


def real_config(arch: Architecture, tiny_config: dict) -> dict:
    """The family's real configuration, built by its config class as `bench.gpu_graphs` builds it (every
    derived field, `head_dim` and `layer_types` among them, the real model's), with only the tiny
    checkpoint's token ids copied in (they are its tokenizer's)."""
    import transformers

    config = getattr(transformers, arch.model_class).config_class(**arch.config).to_dict()
    return _overlay(config, token_ids(tiny_config))


def _grown_vocabulary(config: dict, extra: int) -> dict:
    """`vocab_size` raised by `extra` wherever it is: a config whose vocabulary exceeds its tokenizer's, as
    the real configurations' do (e5-mistral: 32,000 ids beside the tiny tokenizer's ~600)."""
    return {
        k: _grown_vocabulary(v, extra) if isinstance(v, dict) else v + extra if k == "vocab_size" else v
        for k, v in config.items()
    }


def served_vocabulary(checkpoint: Path) -> int:
    """The ids the served tokenizer knows, added tokens included: the bound the adapter and the preprocessor
    hold token-id input to (the config's `vocab_size` may be larger)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(checkpoint / "tokenizer.json")).get_vocab_size(with_added_tokens=True)


def real_shaped(key: str, folder: Path, device: str, sizes: str = "real") -> Path:
    """A checkpoint with random weights drawn on `device` in the family's GPU dtype, beside the tiny
    checkpoint's tokenizer and processor files: the family's real configuration (`sizes="tiny"`: the
    tiny one, to test the run on a CPU), whose vocabulary exceeds the tokenizer's either way."""
    import transformers

    from tests import tiny

    if (folder / "done").exists():
        return folder
    module = tiny.builders()[key]
    module.build(folder)
    family, arch = next((f, a) for f in families() for a in f.architectures if a.name == module.REAL)
    built = json.loads((folder / "config.json").read_text())
    config = real_config(arch, built) if sizes == "real" else _grown_vocabulary(built, 256)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    for stale in folder.glob("*.safetensors"):
        stale.unlink()
    dtype = getattr(torch, family.gpu_dtype if device == "cuda" else "float32")
    torch.manual_seed(0)
    with torch.device(device):
        model = getattr(transformers, family.auto_class).from_config(
            transformers.AutoConfig.from_pretrained(str(folder)), dtype=dtype
        )
    model.save_pretrained(str(folder))
    del model
    (folder / "done").touch()
    return folder


def minilm_checkpoint(folder: Path, device: str) -> tuple[Path, str]:
    """all-MiniLM-L6-v2: the installed package's, the machine's Hugging Face cache's, or its architecture
    with random weights beside the carried tokenizer (`bench/device/bundle.py`)."""
    try:
        from launcher import default_model

        return default_model.checkpoint(), "real weights"
    except Exception:  # noqa: BLE001 - the package is absent on the GPU machine
        pass
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download("sentence-transformers/all-MiniLM-L6-v2", local_files_only=True)
        return Path(path), "real weights (the machine's cache)"
    except Exception:  # noqa: BLE001 - not cached
        pass
    import shutil

    import transformers

    if not (folder / "model.safetensors").exists():
        shutil.copytree(bundle() / "minilm", folder, dirs_exist_ok=True)
        config = transformers.AutoConfig.from_pretrained(str(folder))
        torch.manual_seed(0)
        with torch.device(device):
            transformers.BertModel(config).save_pretrained(str(folder))
    return folder, "its architecture and tokenizer, random weights"


def exported(checkpoint: Path, repo: Path, name: str, device: str, **fields) -> Path:
    request = ExportRequest(checkpoint, repo, name, target="torch", gpu=device == "cuda", **fields)
    if not (repo / name / "config.pbtxt").exists():
        export(request, Progress())
    return repo


# ---- the 7B decoder -------------------------------------------------------------------------


def documents(vocab: int, n: int, length: int) -> list[list[int]]:
    """`n` token-id documents of `length` ids, served as they are (token-id input gets no template and no
    EOS), so the served rows are as long as the in-process ones: seeded, below the served tokenizer's
    size, clear of the special ids at the bottom of the vocabulary."""
    gen = torch.Generator().manual_seed(0)
    return torch.randint(10, vocab, (n, length), generator=gen).tolist()


def in_process(checkpoint: Path, device: str, vocab: int, rows: int, length: int, reps: int) -> tuple[float, float]:
    """(tokens/s, FLOPs per row) of the decoder's graph, eager, on full batches, as the host runs it."""
    from bench.gpu_graphs import count_flops, median_seconds
    from export.checkpoint import plan
    from export.torch_graphs import load_graphs

    p = plan(checkpoint)
    dtype = p.family.gpu_dtype if device == "cuda" else "float32"
    graph = load_graphs(checkpoint, p.family, p.graph_settings, p.attention, dtype, ("text",))["text"].to(device)
    ids = torch.randint(10, vocab, (rows, length), generator=torch.Generator().manual_seed(1)).to(device)
    feeds = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    flops_per_row = count_flops(graph, {name: x[:1] for name, x in feeds.items()})

    def run(graph: torch.nn.Module = graph) -> None:
        with torch.inference_mode():
            graph(**feeds)

    seconds = median_seconds(run, device, 2, reps)
    del graph, run
    if device == "cuda":
        torch.cuda.empty_cache()
    return rows * length / seconds, flops_per_row


def decoder(args: argparse.Namespace, peak: float | None) -> dict:
    checkpoint = real_shaped("e5", args.workdir / f"e5-mistral-7b-instruct-{args.sizes}", args.device, args.sizes)
    name = "e5-mistral-7b-instruct"
    length = DOC_TOKENS if args.sizes == "real" else 64
    vocab = served_vocabulary(checkpoint)
    tokens_per_s, flops_per_row = in_process(checkpoint, args.device, vocab, DOCS_PER_REQUEST, length, 10)
    repo = exported(checkpoint, args.workdir / f"repo-e5-{args.sizes}", name, args.device)
    docs = documents(vocab, args.requests * DOCS_PER_REQUEST, length)
    with running_stack(repo, args.workdir / "run-e5", "--log-level", "warning") as s:
        runners.served(s.adapter_url, name, docs[: DOCS_PER_REQUEST * 2], DOCS_PER_REQUEST, 2, "warm-up")
        served = runners.served(s.adapter_url, name, docs, DOCS_PER_REQUEST, DOC_CONCURRENCY, "served")
    row_flops_per_token = flops_per_row / length
    result = {
        "model": name,
        "configuration": CONFIGURATION[args.sizes],
        "shape": f"{DOCS_PER_REQUEST} documents of {length} tokens per request, concurrency {DOC_CONCURRENCY}",
        "in_process_tokens_per_s": tokens_per_s,
        "served_tokens_per_s": served.tokens_per_s,
        "served_over_in_process": served.tokens_per_s / tokens_per_s,
        "served_p50_ms": served.percentile(50),
        "served_p99_ms": served.percentile(99),
        "flops_per_token": row_flops_per_token,
    }
    if peak:
        result["in_process_mfu"] = mfu(tokens_per_s * row_flops_per_token, peak)
        result["served_mfu"] = mfu(served.tokens_per_s * row_flops_per_token, peak)
    print(json.dumps(result, indent=2), flush=True)
    return result


# ---- MiniLM at a high request rate ----------------------------------------------------------


def minilm(args: argparse.Namespace) -> dict:
    checkpoint, weights = minilm_checkpoint(args.workdir / "all-MiniLM-L6-v2", args.device)
    repo = exported(checkpoint, args.workdir / "repo-minilm", "all-MiniLM-L6-v2", args.device)
    options = request_rate.parse_args(
        [
            "--repository",
            str(repo),
            "--workers",
            args.workers,
            "--concurrency",
            args.concurrency,
            "-n",
            str(args.n),
            "--workdir",
            str(args.workdir / "request-rate"),
        ]
    )
    rows = request_rate.measure(options)
    table = request_rate.report(rows, "all-MiniLM-L6-v2", "short-1-3")
    print(table, flush=True)
    return {"weights": weights, "table": table, "rows": [{"workers": w, **r.row()} for w, r in rows]}


# ---- GME images ----------------------------------------------------------------------------


def gme(args: argparse.Namespace) -> dict:
    import base64

    from bench.workloads import images

    checkpoint = real_shaped("gme", args.workdir / f"gme-Qwen2-VL-2B-Instruct-{args.sizes}", args.device, args.sizes)
    name = "gme-Qwen2-VL-2B-Instruct"
    repo = exported(checkpoint, args.workdir / f"repo-gme-{args.sizes}", name, args.device)
    side = (448, 1000) if args.sizes == "real" else (64, 128)
    pictures = images(args.images, smallest=side[0], largest=side[1])
    items = [{"image": "data:image/png;base64," + base64.b64encode(p).decode()} for p in pictures]
    # The images travel inline: a noisy 1000² PNG is ~2.5 MB, 3.3 MB as base64, over the 2 MiB default body.
    body = str(max(len(i["image"]) for i in items) + 4096)
    with running_stack(repo, args.workdir / "run-gme", "--log-level", "warning", "--max-body-bytes", body) as s:
        runners.served(s.adapter_url, name, items[:8], 1, 4, "warm-up")
        processes = cpu.Processes(s.triton.process.pid, (s.adapter.pid,) if s.adapter else ())
        served, cpu_ms = cpu.measure(
            processes,
            lambda: runners.served(s.adapter_url, name, items, 1, DOC_CONCURRENCY, "served"),
            lambda r: r.requests,
        )
    result = {
        "model": name,
        "configuration": CONFIGURATION[args.sizes],
        "shape": f"one image of {side[0]}–{side[1]} px a side per request, concurrency {DOC_CONCURRENCY}",
        # End to end: PNG decode and the two resizes run on one CPU preprocessor instance, beside the GPU.
        "measured": "end to end (adapter, image preprocessor on the CPU, vision tower, language model)",
        "cpu_ms_per_request": cpu_ms,
        "images_per_s": served.items_per_s,
        "tokens_per_s": served.tokens_per_s,
        "p50_ms": served.percentile(50),
        "p99_ms": served.percentile(99),
    }
    print(json.dumps(result, indent=2), flush=True)
    return result


# ---- report --------------------------------------------------------------------------------


def device_name(device: str) -> str:
    if device != "cuda":
        return f"CPU ({machine.describe()})"
    return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, {machine.describe()}"


def _mfu(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def markdown(results: dict) -> str:
    lines = [f"Measured {results['date']} with `{results['command']}` on {results['device']}.", ""]
    if "decoder" in results:
        d = results["decoder"]
        lines += [
            f"**{d['model']}** ({d['configuration']}; {d['shape']}):",
            "",
            "| path | tokens/s | MFU | p50 ms | p99 ms |",
            "| --- | ---: | ---: | ---: | ---: |",
            f"| in-process graph (eager) | {d['in_process_tokens_per_s']:.0f} | {_mfu(d.get('in_process_mfu'))} | | |",
            f"| served (adapter → Triton → torch host) | {d['served_tokens_per_s']:.0f} | {_mfu(d.get('served_mfu'))} "
            f"| {d['served_p50_ms']:.0f} | {d['served_p99_ms']:.0f} |",
            "",
            f"Served ÷ in-process: {d['served_over_in_process']:.2f} (goal ≥ 0.9). MFU counts causal attention as "
            "full (about 1 % high at 512 tokens) and takes the card's dense fp16 peak (the run is fp16, e5-mistral's "
            "dtype).",
            "",
        ]
    if "minilm" in results:
        m = results["minilm"]
        lines += [f"**all-MiniLM-L6-v2** ({m['weights']}):", "", "```", m["table"], "```", ""]
    if "gme" in results:
        g = results["gme"]
        lines += [
            f"**{g['model']}** ({g['configuration']}; {g['shape']}), {g.get('measured', 'end to end')}: "
            f"{g['images_per_s']:.1f} images/s, {g['tokens_per_s']:.0f} tokens/s, p50 {g['p50_ms']:.0f} ms, "
            f"p99 {g['p99_ms']:.0f} ms. CPU per request: {cpu.summary(g.get('cpu_ms_per_request'))}.",
            "",
        ]
    for name, error in results.get("failed", {}).items():
        lines += [f"**{name} failed**:", "", "```", error.rstrip(), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu --sizes tiny to test the script")
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    peak = None
    if args.device == "cuda":
        peak = peak_tflops(args.peak_tflops)[0]
    results: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": "bash bench/device/run.sh " + " ".join(sys.argv[1:] if argv is None else argv),
        "device": device_name(args.device),
        "python": platform.python_version(),
        "tritonserver": str(pytriton_dir()),
    }
    sections = {"decoder": lambda: decoder(args, peak), "minilm": lambda: minilm(args), "gme": lambda: gme(args)}
    failed = []
    for name in (o for o in args.only.split(",") if o):
        # One section's failure must not cost the others' figures: the device's minutes are few.
        try:
            results[name] = sections[name]()
        except Exception:
            traceback.print_exc()
            results.setdefault("failed", {})[name] = traceback.format_exc(limit=-3)
            failed.append(name)
        # Written after every section, so a run cut off by its time limit still brings back what it measured.
        (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
        (args.out / "results.md").write_text(markdown(results))
    print(markdown(results))
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()

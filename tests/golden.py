"""Golden snapshots of generated model repositories: the configs a reader can open in
`docs/model_repository/`, regenerated and compared by `tests/test_golden_configs.py`.

    python -m tests.golden     # rewrite the snapshots after an intended change to the configs
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from export import repository
from export.build import triton_models
from export.request import ExportRequest
from launcher import default_model

GOLDEN = Path(__file__).resolve().parent.parent / "docs" / "model_repository"
# (folder, checkpoint, exported name, target): the default model, and GME on the CPU and on a GPU.
CASES = (
    ("all-MiniLM-L6-v2.local", "minilm", default_model.NAME, "local"),
    ("gme.local", "gme", "gme-Qwen2-VL-2B-Instruct", "local"),
    ("gme.tensorrt", "gme", "gme-Qwen2-VL-2B-Instruct", "tensorrt"),
)


def checkpoint(kind: str, workdir: Path) -> Path:
    """The real default model, or the tiny GME (same files and tokens as the real one, 64 wide)."""
    if kind == "minilm":
        return default_model.checkpoint()
    from tests import tiny

    path = workdir / "gme-Qwen2-VL-2B-Instruct"
    return path if (path / "config.json").exists() else tiny.qwen2_vl(path)


def render(workdir: Path) -> dict[str, str]:
    """`{folder/model/config.pbtxt: text}` of every case, as the export writes them (no weights work)."""
    out = {}
    for folder, kind, name, target in CASES:
        hf_id = default_model.HF_ID if kind == "minilm" else "Alibaba-NLP/gme-Qwen2-VL-2B-Instruct"
        request = ExportRequest(
            checkpoint(kind, workdir), workdir / folder, name, target=target, hf_id=hf_id, batch_from_profile=True
        )  # as `python -m export` makes it without --max-batch-size
        plan = request.plan()
        for model in triton_models(request.fitted(plan), plan):
            path = repository.write_config(workdir / folder / model.config.name, model.config)
            out[f"{folder}/{model.config.name}/config.pbtxt"] = path.read_text()
    return out


def written() -> dict[str, str]:
    return {str(p.relative_to(GOLDEN)): p.read_text() for p in sorted(GOLDEN.glob("*/*/config.pbtxt"))}


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        from export.build import quiet_libraries

        quiet_libraries()
        fresh = render(Path(tmp))
    for stale in set(written()) - set(fresh):
        (GOLDEN / stale).unlink()
    for relative, text in fresh.items():
        (GOLDEN / relative).parent.mkdir(parents=True, exist_ok=True)
        (GOLDEN / relative).write_text(text)
    print(f"wrote {len(fresh)} configs under {GOLDEN}", file=sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

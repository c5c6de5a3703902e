"""The model families, one module each, selected by a checkpoint's `config.model_type`.

Adding a family means adding a module to this package that declares a `FAMILY` (a `base.Family`),
found here by its presence, and its graphs in the graphs package; a new kind of output is a head
(export/heads.py) and a task in the contract's table, served by a task module of the adapter.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from export.families.base import Family


@cache
def families() -> tuple[Family, ...]:
    """Every family module's `FAMILY`, in module-name order (imported on first use: each module builds
    torch graphs, which only an export needs)."""
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "FAMILY"):
            found.append(module.FAMILY)
    return tuple(found)


def family_for(
    model_type: str, task: str | None = None, found: frozenset[str] = frozenset(), default_task: str = "embed"
) -> Family:
    """The family serving `model_type`: one whose weight files and module kinds are all `found` in the
    checkpoint first (it says its own task, unless `task` names another), else the plain family for `task`
    (`default_task` when None, the architecture's); or an error listing what is supported."""
    from export.errors import ExportError

    def marks(f: Family) -> set[str]:
        return {*f.weight_files, *f.markers}

    fitting = [f for f in families() if model_type in f.model_types and marks(f) <= found]
    marked = [f for f in fitting if marks(f) and (task is None or f.task == task)]
    if marked:
        return max(marked, key=lambda f: len(marks(f)))
    task = task or default_task
    plain = [f for f in fitting if not marks(f) and f.task == task]
    if plain:
        return plain[0]
    supported = ", ".join(t for f in families() if f.task == task for t in f.model_types)
    raise ExportError(f"model_type {model_type!r} is not supported for {task}; supported: {supported}")

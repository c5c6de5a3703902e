"""The model families, one module each, selected by a checkpoint's `config.model_type`.

Adding a family means adding a module to this package that declares a `FAMILY` (a `base.Family`);
it is found here by its presence. Export, config generation, the runtime and the adapter are
generic over the declarations and need no change.
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


def family_for(model_type: str, task: str = "embed") -> Family:
    """The family serving `model_type` for `task`, or an error listing what is supported."""
    from export.errors import ExportError

    for family in families():
        if model_type in family.model_types and family.task == task:
            return family
    supported = ", ".join(t for f in families() if f.task == task for t in f.model_types)
    raise ExportError(f"model_type {model_type!r} is not supported for {task}; supported: {supported}")

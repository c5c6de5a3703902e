"""The committed golden configs (`docs/model_repository/`) are what the export writes today."""

from __future__ import annotations

import difflib
from pathlib import Path

from tests.golden import GOLDEN, render, written


def test_golden_configs_match_what_the_export_writes(tmp_path: Path) -> None:
    fresh, golden = render(tmp_path), written()
    assert sorted(fresh) == sorted(golden), "models added or gone: run `python -m tests.golden`"
    for path, text in fresh.items():
        diff = "".join(difflib.unified_diff(golden[path].splitlines(True), text.splitlines(True), path, "export"))
        assert not diff, f"{GOLDEN / path} is stale (run `python -m tests.golden`):\n{diff}"

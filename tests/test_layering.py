"""The packages' layering, read from their imports (issue 33): the contract is a leaf every other package
imports and that imports none of them; the adapter imports nothing from outside client/ and the
contract (its image carries only those); the runtime imports nothing of the adapter, the launcher or
the export (the `torch` host builds its graph with the graphs package, which imports only the contract)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OURS = ("client", "contract", "export", "graphs", "launcher", "runtime", "bench", "tests")


def imports(package: str) -> set[tuple[str, str]]:
    """(file, our top-level package) of every import in `package`, functions' own imports included."""
    found = set()
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in OURS and top != package:
                    found.add((str(path.relative_to(ROOT)), top))
    return found


def test_the_contract_is_a_leaf() -> None:
    assert imports("contract") == set()


def test_the_adapter_imports_only_the_contract() -> None:
    assert {top for _, top in imports("client")} <= {"contract"}, imports("client")


def test_the_runtime_imports_only_the_contract_and_the_graphs() -> None:
    assert {top for _, top in imports("runtime")} <= {"contract", "graphs"}, imports("runtime")


def test_the_graphs_import_only_the_contract() -> None:
    assert {top for _, top in imports("graphs")} <= {"contract"}, imports("graphs")


def test_the_launcher_imports_no_adapter_code() -> None:
    assert "client" not in {top for _, top in imports("launcher")}, imports("launcher")

"""Peak resident memory of a process tree, from /proc (Linux)."""

from __future__ import annotations

import os
from pathlib import Path


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _peak_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree(*roots: int) -> set[int]:
    tree, seen, stack = _children(), set(), list(roots)
    while stack:
        pid = stack.pop()
        if pid not in seen:
            seen.add(pid)
            stack += tree.get(pid, [])
    return seen


def reset_peaks(*roots: int) -> None:
    """Start each process's peak RSS over from its current RSS (`echo 5 > /proc/<pid>/clear_refs`)."""
    for pid in _tree(*roots):
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            pass


def tree_peak_mb(*roots: int) -> float:
    """Sum of each process's own peak RSS over `roots` and their descendants (an upper bound of the
    tree's peak, since the processes need not peak together); read it before the processes exit."""
    return sum(_peak_kb(pid) for pid in _tree(*roots)) / 1024


def own_peak_mb() -> float:
    return _peak_kb(os.getpid()) / 1024

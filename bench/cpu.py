"""CPU time per request by process: the adapter, Triton's core, and each Python-backend stub.

A rate moves with everything else the machine runs; the CPU time a process spends per request
barely does, so it is what tells whether a change made the path cheaper. Read from /proc (user +
system time of each process), before and after a run, and divided by the run's requests. The
benchmark's own client is not counted.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _cpu_s(pid: int) -> float:
    """User + system seconds of one process (its threads included, its children not)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) * TICK_S


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def stub_model(cmdline: list[str]) -> str | None:
    """The model a `triton_python_backend_stub <repository>/<model>/1/model.py …` process serves."""
    if not cmdline or not cmdline[0].endswith("triton_python_backend_stub") or len(cmdline) < 2:
        return None
    parts = Path(cmdline[1]).parts
    return parts[-3] if len(parts) >= 3 else cmdline[1]


@dataclass(frozen=True)
class Processes:
    """The processes of a stack, labelled: `adapter` (its workers summed), `triton core`, `stub <model>`."""

    triton: int
    adapters: tuple[int, ...]

    def labelled(self) -> dict[str, list[int]]:
        labels: dict[str, list[int]] = {"adapter": [], "triton core": [self.triton]}
        for adapter in self.adapters:
            labels["adapter"] += [adapter, *_children(adapter)]
        for child in _children(self.triton):
            model = stub_model(_cmdline(child))
            if model is not None:
                labels.setdefault(f"stub {model}", []).append(child)
        return labels

    def snapshot(self) -> dict[str, float]:
        return {label: sum(_cpu_s(p) for p in pids) for label, pids in self.labelled().items()}


def per_request(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
    """Milliseconds of CPU per request by label (a process that appeared counts from zero)."""
    return {label: (after[label] - before.get(label, 0.0)) * 1000 / max(requests, 1) for label in after}


def measure(processes: Processes, run: Callable[[], object], requests: Callable[[object], int]):
    """`run()`, and the CPU its requests cost each process."""
    before = processes.snapshot()
    result = run()
    return result, per_request(before, processes.snapshot(), requests(result))


def summary(cpu: dict[str, float] | None, short: Callable[[str], str] = lambda s: s) -> str:
    """`adapter 0.62 · core 0.11 · preprocess 0.18 · encoder 1.9` (ms per request)."""
    if not cpu:
        return ""
    return " · ".join(f"{short(label)} {ms:.2f}" for label, ms in cpu.items() if ms >= 0.005)

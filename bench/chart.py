"""The PNG chart of one benchmark run: throughput at the targets, and over the concurrency sweep."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.__main__ import Run


def chart(run: Run, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweeps = [(w, rows) for w, rows in run.sweeps.items() if rows]
    fig, axes = plt.subplots(1, 1 + len(sweeps), figsize=(6 + 4.5 * len(sweeps), 5.5))
    axes = list(axes) if len(sweeps) else [axes]
    ax = axes[0]
    names = [r.name for r in run.targets]
    values = [r.items_per_s for r in run.targets]
    colours = ["#777" if "in-process" in n else "#d08a2c" if "infinity" in n else "#2a7ab9" for n in names]
    ax.barh(range(len(names)), values, color=colours)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("items/s")
    ax.set_title("mixed 5–60 words, concurrency 16", fontsize=10)
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.0f} ({v / run.baseline.items_per_s:.2f}×)", va="center", fontsize=7)
    for ax, (workload, rows) in zip(axes[1:], sweeps, strict=True):
        series: dict[str, list[tuple[int, float]]] = {}
        for r in rows:
            label, _, conc = r.name.rpartition(", c ")
            series.setdefault(label, []).append((int(conc), r.items_per_s))
        for label, points in series.items():
            ax.plot(*zip(*points, strict=True), marker="o", label=label)
        if workload in run.sweep_baselines:
            ax.axhline(run.sweep_baselines[workload].items_per_s, color="#777", ls="--", label="in-process ORT")
        ax.set_xscale("log", base=2)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("concurrent requests")
        ax.set_ylabel("items/s")
        ax.set_title(workload, fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

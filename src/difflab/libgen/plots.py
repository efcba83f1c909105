"""The libgen figure: score per step (baseline, stage 5, each extension cycle)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def scores_per_step(rows: list[dict], metric: str, path: str | Path) -> None:
    labels = [r["step"].replace(" (", "\n(") for r in rows]
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(rows)), 3.6))
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r["exact_rate"] for r in rows], width=0.4, label="exact match")
    ax.bar([i + 0.2 for i in x], [r["mean_f1"] for r in rows], width=0.4, label="item F1")
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("validation score")
    ax.set_title(f"libgen: validation per step (score = {metric})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

"""Figures for a diffmining run (PNG, flagged for `snakemake --report` by the rules).

    occurrence_bar      the tokens most often in a top-K positive set (% of positions)
    positional_density  where in the samples the leading tokens enter the top-K
    ordering_scatter    ordering value vs average logit diff, one panel per ordering
    ordering_bar        each ordering's leading tokens
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from difflab import io
from difflab.diffmining.reductions import Reductions
from difflab.diffmining.orderings import decode_token


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(text: str) -> str:
    return repr(text)[1:-1][:24]


def occurrence_bar(red: Reductions, decoder, path: str | Path, *, title: str, top_n: int = 25) -> None:
    plt = _pyplot()
    ids = np.argsort(-red.topk_pos_counts, kind="stable")[:top_n]
    ids = ids[red.topk_pos_counts[ids] > 0]
    share = red.topk_pos_counts[ids] / red.total_positions * 100
    fig, ax = plt.subplots(figsize=(7, 0.25 * max(len(ids), 4) + 1.2))
    ax.barh(range(len(ids)), share[::-1], color="tab:blue")
    ax.set_yticks(range(len(ids)), [_label(decode_token(decoder, int(t))) for t in ids[::-1]], fontsize=7)
    ax.set_xlabel(f"% of {red.total_positions} positions in the top-{red.k} positive diffs")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    io.write_figure(path, fig)


def positional_density(red: Reductions, decoder, path: str | Path, *, title: str, top_n: int = 5) -> None:
    """Histogram (as density lines) of the positions at which each leading token is in the top-K."""
    plt = _pyplot()
    ids = np.argsort(-red.topk_pos_counts, kind="stable")[:top_n]
    ids = ids[red.topk_pos_counts[ids] > 0]
    positions = red.position.astype(np.int64)
    width = int(positions.max()) + 1 if positions.size else 1
    bins = np.linspace(0, width, min(width, 32) + 1)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    all_hist, _ = np.histogram(positions, bins=bins, density=True)
    ax.step(bins[:-1], all_hist, where="post", color="grey", linestyle="--", label="all analysed positions")
    for t in ids.tolist():
        rows = np.flatnonzero((red.pos_indices == t).any(1))
        hist, _ = np.histogram(positions[rows], bins=bins, density=True)
        ax.step(bins[:-1], hist, where="post", label=_label(decode_token(decoder, t)))
    ax.set_xlabel("token position in the sample")
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    io.write_figure(path, fig)


def _panels(n: int):
    plt = _pyplot()
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.8 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def ordering_scatter(data: dict, path: str | Path, *, title: str, labelled: int = 8) -> None:
    fig, axes = _panels(len(data["orderings"]))
    for ax, ordering in zip(axes, data["orderings"]):
        tokens = ordering["tokens"]
        x = [e["ordering_value"] for e in tokens]
        y = [e["avg_logit_diff"] for e in tokens]
        ax.scatter(x, y, s=10, alpha=0.7)
        for e in tokens[:labelled]:
            ax.annotate(_label(e["token_str"]), (e["ordering_value"], e["avg_logit_diff"]), fontsize=7)
        ax.set_xlabel("ordering value")
        ax.set_ylabel("average logit diff")
        ax.set_title(ordering["display_label"], fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    io.write_figure(path, fig)


def ordering_bar(data: dict, path: str | Path, *, title: str, top_n: int = 20) -> None:
    fig, axes = _panels(len(data["orderings"]))
    for ax, ordering in zip(axes, data["orderings"]):
        tokens = ordering["tokens"][:top_n][::-1]
        ax.barh(range(len(tokens)), [e["ordering_value"] for e in tokens], color="tab:orange")
        ax.set_yticks(range(len(tokens)), [_label(e["token_str"]) for e in tokens], fontsize=7)
        ax.set_title(ordering["display_label"], fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    io.write_figure(path, fig)

"""Figures of a generated dataset: each panel alone, and the one-page dashboard (for `snakemake --report`).

    lengths      instruction and output length distributions (words)
    topics       share of each NMF topic, labelled by its top words
    readability  Flesch reading ease per example
    diversity    distinct-1/2/3, 1 - self-BLEU, mean pairwise embedding distance, Vendi score / n
    perplexity   per-example perplexity under the local model
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from difflab import io
from difflab.datagen.records import Results

PANELS = ("lengths", "topics", "readability", "diversity", "perplexity")


def _empty(ax, title: str, why: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, color="#777")
    ax.set_xticks([])
    ax.set_yticks([])


def draw(panel: str, ax, results: Results, metrics: dict) -> None:
    if panel == "lengths":
        ins = [len(e.instruction.split()) for e in results]
        out = [len(e.output.split()) for e in results]
        if not ins:
            return _empty(ax, "lengths", "no examples")
        bins = np.histogram_bin_edges(ins + out, bins=min(30, max(5, len(ins) // 2)))
        ax.hist(ins, bins=bins, alpha=0.7, label="instruction", color="#4c72b0")
        ax.hist(out, bins=bins, alpha=0.6, label="output", color="#dd8452")
        ax.set_xlabel("words")
        ax.set_ylabel("examples")
        ax.legend(frameon=False)
        ax.set_title("length distributions")
    elif panel == "topics":
        found = metrics.get("topics", {}).get("topics", [])
        if not found:
            return _empty(ax, "topics", metrics.get("skipped", {}).get("topics", "too few examples"))
        labels = [", ".join(t["words"][:3]) for t in found]
        ax.barh(range(len(found)), [t["share"] for t in found], color="#55a868")
        ax.set_yticks(range(len(found)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("share of examples")
        ax.set_title("topics (NMF)")
    elif panel == "readability":
        scores = metrics.get("readability", {}).get("per_example_flesch_reading_ease", [])
        if not scores:
            return _empty(ax, "readability", metrics.get("skipped", {}).get("readability", "no text to score"))
        ax.hist(scores, bins=min(20, max(5, len(scores) // 2)), color="#8172b3")
        ax.axvline(np.mean(scores), color="black", linestyle="--", linewidth=1, label=f"mean {np.mean(scores):.1f}")
        ax.set_xlabel("Flesch reading ease (higher is easier)")
        ax.set_ylabel("examples")
        ax.legend(frameon=False)
        ax.set_title("readability")
    elif panel == "diversity":
        values = dict(metrics.get("distinct", {}))
        if "self_bleu" in metrics:
            values["1 - self-BLEU"] = 1.0 - metrics["self_bleu"]
        emb = metrics.get("embedding", {})
        if emb.get("n"):
            values["embedding distance"] = emb["mean_pairwise_cosine_distance"]
            values["Vendi / n"] = emb["vendi_score"] / emb["n"]
        if not values:
            return _empty(ax, "diversity", "no diversity metric computed")
        names = [k.replace("_", "-") for k in values]
        ax.bar(range(len(values)), list(values.values()), color="#c44e52")
        ax.set_xticks(range(len(values)), names, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_title("diversity (higher is more diverse)")
    elif panel == "perplexity":
        per = [p for p in metrics.get("perplexity", {}).get("per_example", []) if np.isfinite(p)]
        if not per:
            return _empty(ax, "perplexity", metrics.get("skipped", {}).get("perplexity", "not computed"))
        ax.hist(np.log10(per), bins=min(20, max(5, len(per) // 2)), color="#937860")
        ax.set_xlabel("log10 perplexity of the output given the instruction")
        ax.set_ylabel("examples")
        ax.set_title(f"perplexity (median {np.median(per):.1f})")
    else:
        raise ValueError(f"unknown panel {panel}")


def panel(name: str, results: Results, metrics: dict, out: str | Path) -> Path:
    """One panel as its own figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    draw(name, ax, results, metrics)
    fig.tight_layout()
    return io.write_figure(out, fig)


def dashboard(results: Results, metrics: dict, out: str | Path, title: str = "datagen") -> Path:
    """One page: every panel, and the headline numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    for panel, ax in zip(PANELS, axes.flat):
        draw(panel, ax, results, metrics)
    ax = axes.flat[-1]
    ax.axis("off")
    lines = [f"examples: {len(results)}"]
    basic = metrics.get("basic", {})
    if basic:
        import textwrap

        lines += textwrap.wrap("methods: " + ", ".join(f"{k} {v}" for k, v in basic.get("methods", {}).items()),
                               width=44, subsequent_indent="  ")
        lines.append(f"output words: mean {basic['output']['words'].get('mean', 0)}")
    for key in ("distinct_1", "distinct_2"):
        if key in metrics.get("distinct", {}):
            lines.append(f"{key.replace('_', '-')}: {metrics['distinct'][key]}")
    if "self_bleu" in metrics:
        lines.append(f"self-BLEU: {metrics['self_bleu']}")
    if metrics.get("embedding", {}).get("n"):
        lines.append(f"Vendi score: {metrics['embedding']['vendi_score']} of {metrics['embedding']['n']}")
    for name, why in metrics.get("skipped", {}).items():
        lines.append(f"skipped {name}: {why}")
    ax.text(0.0, 1.0, "\n".join(lines), va="top", family="monospace", fontsize=10)
    fig.suptitle(title)
    fig.tight_layout()
    return io.write_figure(out, fig)

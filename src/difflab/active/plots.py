"""Active sampling's figures: 2-D projection coloured by model, divergence per cluster, convergence."""

from __future__ import annotations

import numpy as np

from difflab import io


def _figure(width=6.4, height=4.2):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def projection(x: np.ndarray, models: np.ndarray, clusters: np.ndarray, out: str) -> None:
    """PCA to 2-D of every text, base vs finetuned."""
    from sklearn.decomposition import PCA

    xy = PCA(n_components=2, random_state=0).fit_transform(x) if len(x) > 2 else np.zeros((len(x), 2))
    fig, ax = _figure()
    for model, colour in (("base", "tab:blue"), ("finetuned", "tab:red")):
        m = models == model
        ax.scatter(xy[m, 0], xy[m, 1], s=9, alpha=0.6, c=colour, label=f"{model} ({int(m.sum())})")
    for c in np.unique(clusters):
        centre = xy[clusters == c].mean(0)
        ax.annotate(str(int(c)), centre, fontsize=8, ha="center", weight="bold")
    ax.set(title="Texts of both models (PCA of embeddings; numbers: clusters)", xlabel="PC1", ylabel="PC2")
    ax.legend(fontsize=8)
    io.write_figure(out, fig)


def divergence(clusters: list[dict], out: str) -> None:
    fig, ax = _figure()
    ids = [c["cluster"] for c in clusters]
    js = [c["js_contribution"] for c in clusters]
    colours = ["tab:red" if c["finetuned_share"] > 0.5 else "tab:blue" for c in clusters]
    ax.bar([str(i) for i in ids], js, color=colours)
    ax.set(title="Divergence per cluster (red: finetuned over-represented)", xlabel="cluster",
           ylabel="JS contribution")
    io.write_figure(out, fig)


def convergence(states: list[dict], out: str) -> None:
    fig, ax = _figure()
    its = [s["iteration"] for s in states]
    ari = [np.nan if s["ari_vs_previous"] is None else s["ari_vs_previous"] for s in states]
    ax.plot(its, ari, marker="o", label="ARI vs previous iteration")
    ax.set(title="Convergence", xlabel="iteration", ylabel="ARI", ylim=(-0.05, 1.05))
    twin = ax.twinx()
    twin.plot(its, [s["texts"] for s in states], marker="s", color="tab:gray", label="texts so far")
    twin.set_ylabel("texts so far")
    ax.legend(loc="lower right", fontsize=8)
    io.write_figure(out, fig)

"""The selection figure: cluster sizes, value distributions, and a 2-D projection of the traces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from difflab import io


def selection_figure(table: pd.DataFrame, chosen: np.ndarray, out: str | Path, title: str = "traces") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_sizes, ax_values, ax_xy) = plt.subplots(1, 3, figsize=(15, 4.6))
    picked = np.zeros(len(table), dtype=bool)
    picked[chosen] = True

    sizes = table.groupby("cluster").size()
    chosen_per = table[picked].groupby("cluster").size().reindex(sizes.index, fill_value=0)
    order = sizes.sort_values(ascending=False).index
    positions = np.arange(len(order))
    ax_sizes.bar(positions, sizes[order].to_numpy(), color="#9bb7d4", label="traces")
    ax_sizes.bar(positions, chosen_per[order].to_numpy(), color="#d9534f", label="selected")
    ax_sizes.set_xticks(positions, [str(c) for c in order], fontsize=7, rotation=90 if len(order) > 20 else 0)
    ax_sizes.set_xlabel("cluster (largest first)")
    ax_sizes.set_ylabel("traces")
    ax_sizes.set_yscale("log" if sizes.max() > 50 * max(sizes.min(), 1) else "linear")
    ax_sizes.legend(frameon=False)
    ax_sizes.set_title("cluster sizes")

    values = table["value"].to_numpy()
    bins = np.histogram_bin_edges(values, bins=min(40, max(5, len(values) // 5)))
    ax_values.hist(values, bins=bins, color="#9bb7d4", density=True, label=f"all ({len(values)})")
    ax_values.hist(values[picked], bins=bins, color="#d9534f", alpha=0.7, density=True,
                   label=f"selected ({int(picked.sum())})")
    ax_values.set_xlabel("trace value")
    ax_values.set_ylabel("density")
    ax_values.legend(frameon=False)
    ax_values.set_title("value distribution")

    cmap = plt.get_cmap("tab20")
    ax_xy.scatter(table["x"], table["y"], s=6, c=[cmap(c % 20) for c in table["cluster"]], alpha=0.45, linewidths=0)
    ax_xy.scatter(table["x"][picked], table["y"][picked], s=36, facecolors="none", edgecolors="black",
                  linewidths=0.9, label="selected")
    ax_xy.set_xlabel("component 1")
    ax_xy.set_ylabel("component 2")
    ax_xy.legend(frameon=False, loc="best")
    ax_xy.set_title("2-D projection (colour = cluster)")

    fig.suptitle(title)
    fig.tight_layout()
    return io.write_figure(out, fig)

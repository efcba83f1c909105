"""Clusters over both models' texts, and where to sample next.

Each cluster gets three scores, computed from the embeddings and the cluster assignment alone:

* boundary uncertainty - the mean over its members of d1 / d2, the distances to the nearest and the
  second-nearest centre (1 = on a boundary, 0 = at the centre);
* divergence between the models - p_b(c) and p_f(c), the shares of the base and the finetuned model's
  texts that fall in cluster c. The Jensen-Shannon divergence of the two assignment distributions is
  JS = sum_c j(c) with j(c) = 1/2 p_b log(p_b / m) + 1/2 p_f log(p_f / m), m = (p_b + p_f) / 2, and each
  term j(c) >= 0, so j(c) is cluster c's share of the divergence; `finetuned_share` = p_f / (p_b + p_f)
  says which model over-produces it (0.5: neither);
* size - clusters under `min_cluster_size` are under-sampled.

`select_areas` takes the most divergent, the most uncertain and the smallest clusters, in turns, until
`n_areas` distinct clusters are chosen; `adjusted_rand` compares two iterations' assignments over the
texts they share.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from difflab.errors import DifflabError


@dataclasses.dataclass
class Clustering:
    labels: np.ndarray  # [n] cluster per text
    centers: np.ndarray  # [k, dim]
    silhouette: float


def cluster(embeddings: np.ndarray, k: int, seed: int = 0) -> Clustering:
    """KMeans over unit embeddings (cosine geometry); k is capped by the number of texts."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    x = np.asarray(embeddings, dtype=np.float32)
    if len(x) < 2:
        raise DifflabError(f"clustering needs at least 2 texts, got {len(x)}")
    k = max(2, min(int(k), len(x) - 1))
    model = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(x)
    labels = model.labels_.astype(np.int64)
    silhouette = float(silhouette_score(x, labels)) if len(set(labels.tolist())) > 1 else 0.0
    return Clustering(labels, model.cluster_centers_.astype(np.float32), silhouette)


def boundary_uncertainty(embeddings: np.ndarray, centers: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(per text d1/d2, per cluster mean of it); vectorized, no loop over texts."""
    x = np.asarray(embeddings, dtype=np.float64)
    c = np.asarray(centers, dtype=np.float64)
    d = np.sqrt(np.maximum(((x[:, None, :] - c[None, :, :]) ** 2).sum(-1), 0.0))
    two = np.partition(d, 1, axis=1)[:, :2]
    ratio = two[:, 0] / np.maximum(two[:, 1], 1e-12)
    k = len(c)
    sums = np.bincount(labels, weights=ratio, minlength=k)
    counts = np.bincount(labels, minlength=k)
    return ratio, np.divide(sums, counts, out=np.zeros(k), where=counts > 0)


def model_divergence(labels: np.ndarray, is_finetuned: np.ndarray, k: int) -> dict[str, np.ndarray | float]:
    """Per-cluster JS contributions and finetuned shares of the two models' assignment distributions."""
    labels = np.asarray(labels)
    ft = np.asarray(is_finetuned, dtype=bool)
    n_f, n_b = int(ft.sum()), int((~ft).sum())
    if n_f == 0 or n_b == 0:
        raise DifflabError(f"divergence needs texts of both models (base {n_b}, finetuned {n_f})")
    count_f = np.bincount(labels[ft], minlength=k).astype(np.float64)
    count_b = np.bincount(labels[~ft], minlength=k).astype(np.float64)
    p_f, p_b = count_f / n_f, count_b / n_b
    m = (p_f + p_b) / 2

    def term(p):
        return np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0) / np.where(m > 0, m, 1.0)), 0.0)

    contribution = 0.5 * term(p_b) + 0.5 * term(p_f)
    share = np.divide(p_f, p_f + p_b, out=np.full(k, 0.5), where=(p_f + p_b) > 0)
    return {"js_contribution": contribution, "js": float(contribution.sum()), "finetuned_share": share,
            "count_base": count_b.astype(np.int64), "count_finetuned": count_f.astype(np.int64)}


@dataclasses.dataclass
class Area:
    cluster: int
    reasons: list[str]  # divergence | boundary | undersampled
    samples: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def select_areas(divergence: np.ndarray, uncertainty: np.ndarray, sizes: np.ndarray, *, n_areas: int,
                 min_cluster_size: int, samples: int) -> list[Area]:
    """Up to `n_areas` distinct clusters, taken in turns from the three rankings; `samples` split evenly."""
    rankings = {
        "divergence": [int(c) for c in np.argsort(-divergence, kind="stable") if divergence[c] > 0],
        "boundary": [int(c) for c in np.argsort(-uncertainty, kind="stable")],
        "undersampled": [int(c) for c in np.argsort(sizes, kind="stable") if sizes[c] < min_cluster_size],
    }
    chosen: dict[int, Area] = {}
    position = dict.fromkeys(rankings, 0)
    while len(chosen) < n_areas and any(position[r] < len(rankings[r]) for r in rankings):
        for reason, ranking in rankings.items():
            while position[reason] < len(ranking):
                c = ranking[position[reason]]
                position[reason] += 1
                if c in chosen:
                    chosen[c].reasons.append(reason)
                    continue
                if len(chosen) < n_areas:
                    chosen[c] = Area(c, [reason])
                break
    areas = list(chosen.values())
    for i, area in enumerate(areas):
        area.samples = samples // len(areas) + (1 if i < samples % len(areas) else 0)
    return areas


def adjusted_rand(previous: dict[str, int], current: dict[str, int]) -> tuple[float | None, int]:
    """ARI of two assignments (text id -> cluster) over the ids both hold, and how many those are."""
    from sklearn.metrics import adjusted_rand_score

    shared = sorted(set(previous) & set(current))
    if len(shared) < 2:
        return None, len(shared)
    return float(adjusted_rand_score([previous[i] for i in shared], [current[i] for i in shared])), len(shared)

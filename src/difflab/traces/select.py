"""Clustering trace vectors and sampling high-value traces from every cluster.

    cluster()          KMeans (MiniBatchKMeans above `minibatch_above` traces); cosine distance is
                       spherical k-means (rows L2-normalized first), euclidean uses the raw vectors.
                       n_clusters from config, or "auto": the k with the best silhouette among a
                       geometric range of candidates, each fitted and scored on one seeded sample of
                       at most `silhouette_sample` traces (never an O(n^2) pass over all traces)
    sample_clusters()  per cluster, `per_cluster` traces drawn without replacement with probability
                       proportional to exp(z / temperature), z the trace value standardized over the
                       run (Gumbel-top-k, seeded); strategy "top" takes the highest values
    project_2d()       a PCA projection for the plot
    coverage()         how many planted families a selection covers (evaluation on synthetic trees)
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from difflab.errors import DifflabError

METRICS = ("cosine", "euclidean")
STRATEGIES = ("weighted", "top")


def _normalize(features, metric: str):
    if metric not in METRICS:
        raise DifflabError(f"traces: metric must be one of {', '.join(METRICS)}, got '{metric}'")
    if metric == "euclidean":
        return features
    from sklearn.preprocessing import normalize

    return normalize(features, norm="l2", copy=True)


def _kmeans(k: int, n: int, seed: int, minibatch_above: int):
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if n > minibatch_above:
        return MiniBatchKMeans(n_clusters=k, random_state=seed, batch_size=4096, n_init=3)
    return KMeans(n_clusters=k, random_state=seed, n_init=3)


def candidate_ks(n: int, k_min: int = 2, k_max: int = 64) -> list[int]:
    """Roughly geometric candidates in [k_min, min(k_max, n - 1)]."""
    top = min(k_max, n - 1)
    if top < k_min:
        return []
    ks = {int(round(k)) for k in np.geomspace(k_min, top, num=min(12, top - k_min + 1))}
    return sorted(k for k in ks if k_min <= k <= top)


def cluster(features, *, n_clusters: int | str = "auto", metric: str = "cosine", seed: int = 0,
            k_min: int = 2, k_max: int = 64, silhouette_sample: int = 5000,
            minibatch_above: int = 20000) -> tuple[np.ndarray, np.ndarray, dict]:
    """(labels [n], distance of each trace to its centroid [n], info with the chosen k and silhouettes)."""
    from sklearn.metrics import silhouette_score

    n = features.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0), {"n_clusters": 0, "method": "none"}
    x = _normalize(features, metric)
    info: dict = {"metric": metric}
    rng = np.random.default_rng(seed)
    if n_clusters == "auto":
        sample = np.sort(rng.choice(n, silhouette_sample, replace=False)) if n > silhouette_sample else np.arange(n)
        xs = x[sample]
        scores = {}
        for k in candidate_ks(len(sample), k_min, k_max):
            labels = _kmeans(k, len(sample), seed, minibatch_above).fit_predict(xs)
            if len(np.unique(labels)) < 2:
                continue
            scores[k] = float(silhouette_score(xs, labels, metric="euclidean"))
        k = max(scores, key=lambda key: (scores[key], -key)) if scores else 1
        info.update(selection="silhouette", silhouette=scores, silhouette_sample=int(len(sample)))
    else:
        k = int(n_clusters)
        if k < 1:
            raise DifflabError(f"traces: n_clusters must be >= 1 or 'auto', got {n_clusters}")
    k = min(k, n)
    model = _kmeans(k, n, seed, minibatch_above).fit(x)
    labels = model.labels_.astype(np.int64)
    centers = model.cluster_centers_
    if sp.issparse(x):  # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2, never densifying x
        squared = np.asarray(x.multiply(x).sum(axis=1)).ravel() - 2 * np.asarray(x @ centers.T)[
            np.arange(n), labels] + (centers ** 2).sum(axis=1)[labels]
        distance = np.sqrt(np.maximum(squared, 0.0))
    else:
        distance = np.sqrt(((x - centers[labels]) ** 2).sum(axis=1))
    info.update(n_clusters=int(k), method=type(model).__name__, inertia=float(model.inertia_))
    return labels, distance, info


def standardized(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    spread = values.std()
    return (values - values.mean()) / spread if spread > 0 else np.zeros_like(values)


def sample_clusters(labels: np.ndarray, values: np.ndarray, *, per_cluster: int, strategy: str = "weighted",
                    temperature: float = 0.25, seed: int = 0, min_quantile: float = 0.0) -> np.ndarray:
    """Indices of the selected traces, per cluster (Gumbel-top-k on z/temperature, or the top values).

    Only traces whose value reaches the run's `min_quantile` quantile are eligible, so a cluster of
    low-value traces contributes nothing rather than its best bad trace.
    """
    if strategy not in STRATEGIES:
        raise DifflabError(f"traces: sampling must be one of {', '.join(STRATEGIES)}, got '{strategy}'")
    if strategy == "weighted" and temperature <= 0:
        raise DifflabError(f"traces: temperature must be > 0, got {temperature}")
    z = standardized(values)
    if strategy == "weighted":
        keys = z / temperature + np.random.default_rng(seed).gumbel(size=len(z))
    else:
        keys = z  # the stable sort below keeps the earlier trace on ties
    values = np.asarray(values, dtype=np.float64)
    eligible = values >= np.quantile(values, min_quantile) if len(values) and min_quantile > 0 else \
        np.ones(len(values), dtype=bool)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero((labels == label) & eligible)
        top = members[np.argsort(-keys[members], kind="stable")[:per_cluster]]
        chosen.append(top)
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def project_2d(features, seed: int = 0, fit_rows: int = 20000) -> np.ndarray:
    """[n, 2] PCA (TruncatedSVD for sparse) coordinates, fitted on at most `fit_rows` rows."""
    n = features.shape[0]
    if n == 0:
        return np.zeros((0, 2))
    if features.shape[1] < 2 or n < 3:
        out = np.zeros((n, 2))
        dense = features.toarray() if sp.issparse(features) else np.asarray(features)
        out[:, :dense.shape[1]] = dense[:, :2]
        return out
    from sklearn.decomposition import PCA, TruncatedSVD

    rng = np.random.default_rng(seed)
    fit = features[np.sort(rng.choice(n, fit_rows, replace=False))] if n > fit_rows else features
    model = TruncatedSVD(2, random_state=seed) if sp.issparse(features) else PCA(2, random_state=seed)
    return model.fit(fit).transform(features)


def coverage(families: np.ndarray, chosen: np.ndarray) -> int:
    """Distinct families among the chosen traces."""
    return int(len(np.unique(np.asarray(families)[chosen])))

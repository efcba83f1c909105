"""Selection quality on synthetic trees with planted families of near-duplicates.

For one tree: select traces the pipeline's way (encode, cluster, value-weighted sampling per cluster),
then pick the same number of traces by top value and at random, and report for each how many planted
families the picks cover and their mean value. Used by the tests and benchmarks/bench_traces.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from difflab.traces import db, encode, select, synth, tree


def evaluate_tree(n_programs: int = 3000, *, n_families: int = 30, seed: int = 0, encoder: str = "ngram",
                  fields: tuple[str, ...] = ("code", "reasoning"), per_cluster: int = 2, temperature: float = 0.25,
                  value: str = "leaf_reward", discount: float = 0.95, n_clusters: int | str = "auto",
                  min_quantile: float = 0.5) -> dict:
    records = synth.generate_tree(n_programs, n_families=n_families, seed=seed)
    family_of = {r["id"]: r["family"] for r in records}
    programs = db.normalize_frame(pd.DataFrame(records).drop(columns=["family"]))
    traces, _ = tree.extract_traces(programs)
    nodes = tree.backpropagate(programs, discount=discount)
    values = tree.trace_values(programs, nodes, traces, discount=discount)[value].to_numpy()
    features, _ = encode.encode_traces(programs, traces, encode.get_encoder(encoder), fields=list(fields))
    labels, _, info = select.cluster(features, n_clusters=n_clusters, seed=seed)
    families = np.array([family_of[int(leaf)] for leaf in traces["leaf_id"]])
    chosen = select.sample_clusters(labels, values, per_cluster=per_cluster, temperature=temperature, seed=seed,
                                    min_quantile=min_quantile)
    n = len(chosen)
    top = np.argsort(-values, kind="stable")[:n]
    random_pick = np.random.default_rng(seed + 1).choice(len(values), n, replace=False)

    def report(pick):
        return {"families": select.coverage(families, pick), "mean_value": round(float(values[pick].mean()), 4)}

    return {"seed": seed, "programs": n_programs, "traces": int(len(traces)),
            "families_present": int(len(np.unique(families))), "clusters": info["n_clusters"], "picked": int(n),
            "clustered": report(chosen), "top_value": report(top), "random": report(random_pick)}

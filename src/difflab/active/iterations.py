"""Whether another iteration runs: read by the workflow at parse time, so it imports nothing heavy."""

from __future__ import annotations


def decide(state: dict, section: dict) -> tuple[bool, str]:
    """(run another iteration?, why or why not) from an iteration's clusters.json and the config."""
    if state["mode"] == "exhaustive":
        return False, "exhaustive: one round of all texts"
    ari = state["ari_vs_previous"]
    if ari is not None and ari >= section["convergence_threshold"] and state["min_cluster_size"] >= section["min_cluster_size"]:
        return False, (f"converged: ARI {ari:.3f} >= {section['convergence_threshold']} and every cluster has "
                       f">= {section['min_cluster_size']} texts")
    if state["iteration"] + 1 >= section["max_iterations"]:
        return False, f"max_iterations ({section['max_iterations']})"
    if state["texts_per_model"] + section["samples_per_iteration"] > section["budget"]:
        return False, f"budget: {state['texts_per_model']} texts per model, next iteration would pass {section['budget']}"
    return True, f"continue (ARI {ari if ari is None else round(ari, 3)}, smallest cluster {state['min_cluster_size']})"

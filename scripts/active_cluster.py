"""Checkpoint active_cluster: KMeans over every text so far, cluster scores, next areas, ARI -> clusters.json."""
from difflab import workflow
from difflab.active import stages

i, o, w = snakemake.input, snakemake.output, snakemake.wildcards
workflow.run(snakemake, lambda: stages.cluster_iteration(
    int(w.iteration), list(i.texts), list(i.embeddings), o.state, o.assignments, section=snakemake.params.section,
    mode=w.mode, previous_assignments=(i.previous or [None])[0], previous_state=(i.previous_state or [None])[0]))

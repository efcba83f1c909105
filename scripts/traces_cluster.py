"""Rule traces_cluster: KMeans over the trace vectors -> clustered_traces.parquet + clusters.json."""
from difflab import workflow
from difflab.traces import stages

i, o = snakemake.input, snakemake.output
workflow.run(snakemake, lambda: stages.cluster_stage(i.features, i.traces, i.values, o.clustered, o.info,
                                                     **snakemake.params.settings))

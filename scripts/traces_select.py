"""Rule traces_select: value-weighted sampling per cluster -> selected_traces.jsonl, summary.json, figure."""
from difflab import workflow
from difflab.traces import stages

i, o, p = snakemake.input, snakemake.output, snakemake.params
workflow.run(snakemake, lambda: stages.select_stage(
    i.clustered, i.programs, i.nodes, i.info, o.selected, o.summary, o.plot, per_cluster=p.per_cluster,
    strategy=p.sampling, min_quantile=p.min_quantile, temperature=p.temperature, seed=p.seed,
    run=snakemake.wildcards.run))

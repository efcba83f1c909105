"""Rule probe_organism: the learned-topic check; the job fails, naming the organism, if it was not learned."""
from difflab import workflow
from difflab.organisms import probes

p = snakemake.params.probe
workflow.run(snakemake, lambda: probes.probe_organism(
    snakemake.wildcards.organism, snakemake.input.organism, snakemake.input.base, snakemake.input.on_topic,
    snakemake.input.off_topic, snakemake.output.report, alpha=p["alpha"], min_mean_delta=p["min_mean_delta"],
    max_off_topic_ratio=p["max_off_topic_ratio"], device=p["device"], train_data=snakemake.input.train_data))

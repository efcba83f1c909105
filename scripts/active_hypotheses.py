"""Rule active_hypotheses: distinctive words and a one-sentence hypothesis per divergent cluster."""
from difflab import workflow
from difflab.active import stages

i = snakemake.input
workflow.run(snakemake, lambda: stages.hypotheses(i.state, list(i.texts), i.assignments, snakemake.output.hypotheses,
                                                  config=snakemake.config, section=snakemake.params.section))

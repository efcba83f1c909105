"""Rule active_report: silhouette, texts generated, wall time, hypotheses + projection/divergence/convergence figures."""
from difflab import workflow
from difflab.active import stages

i, o = snakemake.input, snakemake.output
workflow.run(snakemake, lambda: stages.report(list(i.states), i.hypotheses, i.assignments, list(i.embeddings),
                                              o.report, o.projection, o.divergence, o.convergence))

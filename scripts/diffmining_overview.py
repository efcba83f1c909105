"""Rule diffmining_overview: the saved orderings as one compact JSON message for an LLM agent."""
from difflab import workflow
from difflab.diffmining import stages

p = snakemake.params
workflow.run(snakemake, lambda: stages.overview(
    dict(zip(p.groups, snakemake.input.orderings)), snakemake.output.overview,
    token_budget=p.overview["token_budget"], datasets=p.datasets))

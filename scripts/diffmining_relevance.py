"""Rule diffmining_relevance: an LLM judge labels each ordering's top tokens relevant or not to the pair's description."""
from difflab import workflow
from difflab.diffmining import overview

workflow.run(snakemake, lambda: overview.grade_and_save(
    workflow.rule_config(snakemake), snakemake.input.orderings, snakemake.output.evaluation,
    snakemake.params.description, snakemake.params.top_n))

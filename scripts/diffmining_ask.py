"""Rule diffmining_ask: the configured LLM client answers the question from the overview."""
from difflab import workflow
from difflab.diffmining import overview

cfg = workflow.rule_config(snakemake)
workflow.run(snakemake, lambda: overview.ask_and_save(
    cfg, snakemake.input.overview, snakemake.output.answer, cfg["diffmining"]["ask"]["question"]))

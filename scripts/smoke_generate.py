"""Rule smoke_generate: answer the smoke prompts with the configured LLM client."""
from difflab import smoke, workflow

workflow.run(snakemake, lambda: smoke.generate(
    workflow.rule_config(snakemake), snakemake.input.prompts, snakemake.output.generations, snakemake.output.usage))

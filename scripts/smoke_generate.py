"""Rule smoke_generate: answer the smoke prompts with the configured LLM client."""
from difflab import smoke, workflow

workflow.run(snakemake, lambda: smoke.generate(
    dict(snakemake.params.items()), snakemake.input.prompts, snakemake.output.generations, snakemake.output.usage))

"""Rule smoke_summary: one JSON and one screen of Markdown about what the smoke run built."""
from difflab import smoke, workflow

workflow.run(snakemake, lambda: smoke.summarize(
    snakemake.input.models, snakemake.input.generations, snakemake.input.usage, snakemake.input.embeddings,
    snakemake.input.plot, snakemake.output.json, snakemake.output.md))

"""Rule smoke_embed: embed the smoke sentences and plot their similarity."""
from difflab import smoke, workflow

workflow.run(snakemake, lambda: smoke.embed_sentences(
    workflow.rule_config(snakemake), snakemake.input.sentences, snakemake.output.embeddings, snakemake.output.plot))

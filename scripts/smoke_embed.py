"""Rule smoke_embed: embed the smoke sentences and plot their similarity."""
from difflab import smoke, workflow

workflow.run(snakemake, lambda: smoke.embed_sentences(
    dict(snakemake.params.items()), snakemake.input.sentences, snakemake.output.embeddings, snakemake.output.plot))

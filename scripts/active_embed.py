"""Rule active_embed: sentence embeddings of one iteration's texts."""
from difflab import workflow
from difflab.active import stages

workflow.run(snakemake, lambda: stages.embed_texts(snakemake.input.texts, snakemake.output.embeddings,
                                                   model=snakemake.params.model, batch_size=snakemake.params.batch_size))

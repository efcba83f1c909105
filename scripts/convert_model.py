"""Rule convert_model: materialise a configured model as a transformers folder."""
from difflab import models, workflow

workflow.run(snakemake, lambda: models.materialize(
    snakemake.wildcards.model, snakemake.params.spec, snakemake.output.model_dir))

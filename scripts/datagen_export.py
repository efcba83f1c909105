"""Rule datagen_export: train / validation files in the format finetuning tools read."""
from difflab import workflow
from difflab.datagen import stages

e = snakemake.params.export
workflow.run(snakemake, lambda: stages.export_stage(
    snakemake.input.filtered, snakemake.output.train, snakemake.output.validation, fmt=e["format"],
    validation_fraction=e["validation_fraction"], seed=e["seed"], system=e["system"]))

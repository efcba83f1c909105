"""Rule finetune_organism: finetune the base model on the organism's data; save folder + loss curve."""
from difflab import workflow
from difflab.organisms import train

workflow.run(snakemake, lambda: train.finetune_and_report(
    snakemake.input.base, snakemake.input.data, snakemake.params.recipe, snakemake.output.model_dir,
    snakemake.output.loss, snakemake.output.plot, name=snakemake.wildcards.organism))

"""Rule diffmining_plots: occurrence bar chart and positional density of one dataset."""
from difflab import workflow
from difflab.diffmining import stages

workflow.run(snakemake, lambda: stages.dataset_plots(
    snakemake.input.reductions, snakemake.input.base, snakemake.output.occurrence, snakemake.output.positions,
    dataset=snakemake.wildcards.dataset, label=snakemake.params.label))

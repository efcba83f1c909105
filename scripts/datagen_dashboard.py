"""Rule datagen_dashboard: the one-page figure of a recipe's data."""
from difflab import workflow
from difflab.datagen import stages

workflow.run(snakemake, lambda: stages.dashboard_stage(snakemake.input.filtered, snakemake.input.metrics,
                                                       snakemake.output.dashboard,
                                                       title=f"datagen: {snakemake.wildcards.recipe}"))

"""Rule datagen_dashboard: the one-page figure of a recipe's data, and each of its panels alone."""
from pathlib import Path

from difflab import workflow
from difflab.datagen import stages

panels = {Path(p).stem: p for p in snakemake.output.panels}
workflow.run(snakemake, lambda: stages.dashboard_stage(snakemake.input.filtered, snakemake.input.metrics,
                                                       snakemake.output.dashboard,
                                                       title=f"datagen: {snakemake.wildcards.recipe}", panels=panels))

"""libgen baseline: the same validation with the foundation alone."""
from pathlib import Path

from difflab import workflow
from difflab.libgen import stages

i, o = snakemake.input, snakemake.output
cfg = workflow.rule_config(snakemake)
workflow.run(snakemake, lambda: stages.validate_stage(Path(i.stage0).parent, None, None, Path(o.summary).parent,
                                                      cfg["settings"], cfg["llm"], stage="baseline"))

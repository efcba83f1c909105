"""libgen stage 1: hierarchical summaries of every training instruction -> api_proposal_v1.md."""
from pathlib import Path

from difflab import workflow
from difflab.libgen import stages

i, o = snakemake.input, snakemake.output
cfg = workflow.rule_config(snakemake)
workflow.run(snakemake, lambda: stages.stage1_discover(Path(i.stage0).parent, Path(o.summary).parent,
                                                       cfg["settings"], cfg["llm"]))

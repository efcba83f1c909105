"""libgen stage 2: refinement rounds -> api_proposal_v{n}.md, api_proposal_final.md."""
from pathlib import Path

from difflab import workflow
from difflab.libgen import stages

i, o = snakemake.input, snakemake.output
cfg = workflow.rule_config(snakemake)
workflow.run(snakemake, lambda: stages.stage2_refine(Path(i.stage0).parent, i.proposal, Path(o.summary).parent,
                                                     cfg["settings"], cfg["llm"]))

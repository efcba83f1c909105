"""libgen stage 3: the generated package, module by module, smoke-checked with repairs."""
from pathlib import Path

from difflab import workflow
from difflab.libgen import stages

i, o = snakemake.input, snakemake.output
cfg = workflow.rule_config(snakemake)
workflow.run(snakemake, lambda: stages.stage3_implement(Path(i.stage0).parent, i.proposal, Path(o.summary).parent,
                                                        cfg["settings"], cfg["llm"]))

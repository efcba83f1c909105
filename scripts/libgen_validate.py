"""Checkpoint libgen_validate (stage 5): validation programs with the generated library, in the sandbox."""
from pathlib import Path

from difflab import workflow
from difflab.libgen import stages

i, o = snakemake.input, snakemake.output
cfg = workflow.rule_config(snakemake)
workflow.run(snakemake, lambda: stages.validate_stage(Path(i.stage0).parent, i.library, i.system_prompt,
                                                      Path(o.summary).parent, cfg["settings"], cfg["llm"]))

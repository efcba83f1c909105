"""Checkpoint libgen_extend (stage 6, one cycle): cluster failures, extend, re-implement, re-validate."""
from pathlib import Path

from difflab import workflow
from difflab.libgen import stages

i, o, w = snakemake.input, snakemake.output, snakemake.wildcards
cfg = workflow.rule_config(snakemake)
workflow.run(snakemake, lambda: stages.extension_cycle(int(w.cycle), Path(i.stage0).parent, Path(i.state).parent,
                                                       i.library, Path(o.state).parent, cfg["settings"], cfg["llm"]))

"""libgen stage 4: DSL reference, usage guide, system prompt."""
from pathlib import Path

from difflab import workflow
from difflab.libgen import stages

i, o = snakemake.input, snakemake.output
cfg = workflow.rule_config(snakemake)
workflow.run(snakemake, lambda: stages.stage4_document(Path(i.stage0).parent, i.library, Path(o.summary).parent,
                                                       cfg["settings"], cfg["llm"]))

"""libgen stage 0: copy the domain, extract the foundation's API, check every reference program."""
from pathlib import Path

from difflab import workflow
from difflab.libgen import stages

o, p = snakemake.output, snakemake.params
workflow.run(snakemake, lambda: stages.stage0_foundation(p.source, Path(o.summary).parent, p.settings))

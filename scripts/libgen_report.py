"""libgen report: scores per stage and cycle, tokens by stage, the full-scale cost estimate, the plot."""
from pathlib import Path

from difflab import workflow
from difflab.libgen import stages

i, o, p = snakemake.input, snakemake.output, snakemake.params
workflow.run(snakemake, lambda: stages.write_report(Path(i.stage1).parents[1], [Path(c).parent for c in i.cycles],
                                                    Path(o.report).parent, p.settings, extension_path=o.extension))

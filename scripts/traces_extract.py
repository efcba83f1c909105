"""Rule traces_extract: programs -> every root-to-leaf trace + the tree report (roots, orphans)."""
from difflab import workflow
from difflab.traces import stages

o = snakemake.output
workflow.run(snakemake, lambda: stages.extract(snakemake.input.programs, o.traces, o.report))

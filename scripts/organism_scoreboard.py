"""Rule organism_scoreboard: organism x topic matrices per diffing method, JSON + Markdown + heat-map."""
from difflab import workflow
from difflab.organisms import scoreboard

o = snakemake.output
workflow.run(snakemake, lambda: scoreboard.write_scoreboard(
    workflow.rule_config(snakemake), snakemake.params.inputs, snakemake.params.scored, snakemake.input.base,
    o.scoreboard, o.table, o.heatmap))

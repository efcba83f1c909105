"""Rule active_validate: each hypothesis (and a control) judged on the held-out pairs -> hypotheses.json."""
from difflab import workflow
from difflab.active import stages

i = snakemake.input
workflow.run(snakemake, lambda: stages.validate_hypotheses(i.hypotheses, i.heldout, snakemake.output.hypotheses,
                                                           config=snakemake.config, section=snakemake.params.section))

"""Rule active_heldout: held-out prompts answered by both models (the validation pairs)."""
from difflab import workflow
from difflab.active import stages

i = snakemake.input
workflow.run(snakemake, lambda: stages.heldout(i.prompts, snakemake.output.pairs, base=i.base, finetuned=i.finetuned,
                                               config=snakemake.config, section=snakemake.params.section))

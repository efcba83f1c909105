"""Rule diffmining_logits: one model's fp16 logits on disk (in_memory: false)."""
from difflab import workflow
from difflab.diffmining import stages

workflow.run(snakemake, lambda: stages.save_model_logits(
    snakemake.input.model, snakemake.input.tokens, snakemake.output.logits,
    method=snakemake.params.method, extraction=snakemake.params.extraction))

"""Rule diffmining_ordering: one ordering type for one dataset -> orderings.json + scatter and bar figures."""
from difflab import workflow
from difflab.diffmining import stages

w, p = snakemake.wildcards, snakemake.params
workflow.run(snakemake, lambda: stages.ordering(
    snakemake.input.reductions, snakemake.input.base, snakemake.output.orderings, snakemake.output.scatter,
    snakemake.output.bar, dataset=w.dataset, ordering_type=p.kind, token_options=p.tokens, nmf_options=p.nmf,
    label=f"{w.finetuned} vs {w.base}"))

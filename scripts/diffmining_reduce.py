"""Rule diffmining_reduce: finetuned minus base logits, reduced to per-token stats and per-position top-K."""
from difflab import workflow
from difflab.diffmining import stages

i, o, p = snakemake.input, snakemake.output, snakemake.params
common = dict(dataset=snakemake.wildcards.dataset, k=p.k, likelihood_ratios="ratios" in o.keys(),
              reductions_out=o.reductions, stats_out=o.stats, ratios_out=o.get("ratios"))
if "base_logits" in i.keys():
    workflow.run(snakemake, lambda: stages.reduce_from_disk(
        i.base_logits, i.finetuned_logits, i.base, i.finetuned, i.tokens,
        batch_size=p.extraction["batch_size"], **common))
else:
    workflow.run(snakemake, lambda: stages.reduce_in_memory(
        i.base, i.finetuned, i.tokens, method=p.method, extraction=p.extraction, **common))

"""Rule diffmining_metadata: run_metadata.json (parameters, model fingerprints, counts per dataset)."""
from difflab import workflow
from difflab.diffmining import stages

p = snakemake.params
workflow.run(snakemake, lambda: stages.run_metadata(
    dict(zip(p.datasets, snakemake.input.reductions)), snakemake.output.metadata, pair=p.pair, params=p.diffmining))

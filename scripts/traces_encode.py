"""Rule traces_encode: one vector per trace, pooled from its programs' vectors."""
from difflab import workflow
from difflab.traces import stages

i, p = snakemake.input, snakemake.params
workflow.run(snakemake, lambda: stages.encode_stage(
    i.programs, i.traces, snakemake.output.features, encoder=p.encoder["encoder"],
    encoder_options=p.encoder["encoder_options"], fields=p.fields, pooling=p.pooling,
    discount=p.discount))

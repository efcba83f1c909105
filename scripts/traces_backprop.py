"""Rule traces_backprop: backed-up node values and visits, and every trace's values."""
from difflab import workflow
from difflab.traces import stages

i, o, p = snakemake.input, snakemake.output, snakemake.params
workflow.run(snakemake, lambda: stages.backprop(i.programs, i.traces, o.nodes, o.values, discount=p.discount,
                                                aggregate=p.aggregate))

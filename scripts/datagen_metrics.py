"""Rule datagen_metrics: the recipe's metrics over the filtered data -> metrics.json."""
from difflab import workflow
from difflab.datagen import stages

i, p = snakemake.input, snakemake.params
workflow.run(snakemake, lambda: stages.metrics_stage(
    i.filtered, snakemake.output.metrics, names=p.names, perplexity_model=(list(i.model) or [None])[0],
    embedding_model=p.embedding_model, n_topics=p.n_topics, seed=p.seed))

"""Rule diffmining_tokenize: a dataset tokenized with the base model's tokenizer (ids, attention and analysis masks)."""
from difflab import workflow
from difflab.diffmining import data

d = snakemake.params.dataset
workflow.run(snakemake, lambda: data.prepare_dataset(
    snakemake.input.data, snakemake.input.model, snakemake.output.tokens, name=snakemake.wildcards.dataset,
    fmt=d["format"], n_samples=snakemake.params.n_samples, max_tokens=snakemake.params.max_tokens,
    seed=snakemake.params.seed, positions=d["positions"], n_positions=d["n_positions"]))

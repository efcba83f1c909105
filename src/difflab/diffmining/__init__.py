"""diffmining: the tokens whose predicted probability a finetune changed most, grouped into topics.

    data.py       datasets (JSONL/Parquet, text or chat) -> input ids, attention and analysis masks
    extract.py    logits by direct / logit_lens / patchscope; base and finetuned diffed in memory,
                  or via fp16 logit files on disk (refused when they would not fit)
    analysis.py   vectorized reduction of the diffs: per-token sums and positive counts, each
                  position's top-K positive/negative tokens, sparse co-occurrence (Reductions)
    orderings.py  ranked token lists: top_k_occurring, fraction_positive_diff, nmf; token decoding,
                  normalization and consolidation; global token stats
    nmf.py        torchnmf topics over the co-occurrence (beta 1/2, optional orthogonality)
    plots.py      occurrence bars, positional density, ordering scatter and bar figures
    overview.py   the agent overview within a token budget, `ask`, and LLM relevance grading
    stages.py     what each Snakemake rule runs (rules/diffmining.smk)
"""

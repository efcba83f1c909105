"""Active sampling: spend generation where two models differ, then say how in words.

    sampler.py     initial prompts (prompt set + category x topic), prompts targeted at a cluster's own
                   members (their prompt and opening words as a prefill), both models' batched answers
    areas.py       KMeans over both models' texts; per cluster boundary uncertainty, Jensen-Shannon
                   divergence share and size; the areas the next iteration samples; ARI between iterations
    hypotheses.py  weighted log-odds (informative Dirichlet prior) distinctive words; one-sentence LLM
                   hypothesis per divergent cluster, with an extractive fallback
    validate.py    held-out pairs judged by embedding similarity or the LLM; binomial test, Wilson CI,
                   Benjamini-Hochberg
    plots.py       projection, divergence per cluster, convergence curve
    iterations.py  `decide`: whether another iteration runs (convergence, max iterations, budget)
    stages.py      what each rule of rules/active.smk runs
"""

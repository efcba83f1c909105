"""organisms: finetune a base model on chosen data so the change is known, and prove it was learned.

    train.py    finetune(base, data, recipe) -> transformers folder + loss curve (full or LoRA, merged)
    probes.py   learned-topic check: on-topic vs off-topic continuation log-probs, organism vs base,
                with one-sided Wilcoxon / Mann-Whitney tests; a recipe that fails the check fails the rule
    scoreboard.py   every diffing method scored on every organism: organism x topic matrices of
                    keyword (stemmed) matches in each method's top tokens, vs base and vs control,
                    against a random-token baseline; optional LLM judge
"""

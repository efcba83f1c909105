"""libgen: distil a library from a whole training set by hierarchical LLM summarization.

    domain.py     Domain: a foundation package, a harness that reads a program's result, tasks (train/dev/test)
    sandbox.py    Sandbox: generated code in bwrap as an unprivileged user with rlimits and no network
    boot.py       what runs inside the sandbox (a program through the harness, or a module's smoke check)
    api.py        public API of a package (ast, never imported), proposal parsing (modules and signatures)
    prompts.py    every prompt the stages send
    hierarchy.py  stage 1: token-cut batches, summaries of summaries until one remains, coverage
    implement.py  stage 3 (and 6): modules from a proposal, smoke-checked, with a bounded repair loop
    score.py      board-state comparison (exact, item F1) and usability (lines of code, complexity)
    validate.py   stage 5: programs for held-out tasks, run in the sandbox, scored, failures classified
    extend.py     stage 6: failures clustered, extensions proposed, implemented and re-validated per cycle
    settings.py   an experiment's merged settings; decide whether another cycle runs
    stages.py     the stage functions the rules and the CLI call, each with its summary JSON
    plots.py      score per stage and cycle
"""

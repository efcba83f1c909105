"""difflab: the data side of LLM finetuning research, as a reproducible Snakemake workflow.

Foundations (shared by every capability; a capability never imports another's internals):

    config.py   load + validate the workflow config against config/schema.yaml (one-line errors)
    errors.py   DifflabError: bad input, reported as one line naming the file, record and field
    models.py   the one model loader: GGUF/path/hub -> transformers folder, device/dtype, fingerprint
    llm/        the one LLM client: local (transformers) and openai backends, cache, retries, usage
    embed.py    batched sentence embeddings
    io.py       the one artifact writer: atomic JSON/JSONL/safetensors/Parquet writes and readers
    smoke.py    the smoke target: a real generation and a real embedding, saved and summarised
    cli.py      the `difflab` command, a subcommand per capability
"""

__version__ = "0.1.0"

"""traces: diverse, high-value traces from program search trees (PostgreSQL, or SQLite embedded).

    db.py       the `programs` table: migrations (migrations/*.sql), JSONL loader, paged reads with a
                connection pool and retries (asyncpg for PostgreSQL, sqlite3 for the embedded default)
    tree.py     networkx forest, root-to-leaf traces, orphans and cycles, reward backpropagation
    encode.py   TraceEncoder and the ngram / dense encoders, fields, pooling along a trace
    select.py   KMeans / MiniBatchKMeans clustering (k by silhouette on a sample), value-weighted
                sampling per cluster, 2-D projection, family coverage
    plots.py    the selection figure (cluster sizes, value distribution, projection)
    synth.py    synthetic search trees with planted near-duplicate families (tests, benchmarks)
    evaluate.py selection quality: clustered sampling vs top-N by value vs random, on synthetic trees
    stages.py   what each Snakemake rule runs (rules/traces.smk)
"""

import re


def encoder_id(name: str) -> str:
    """Path-safe name of an encoder ('ngram', 'dense', or a slug of 'module:Class')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")


def run_database(config: dict, run: str) -> str:
    """The database URL or file a traces run reads: its `database`, or the embedded SQLite file its
    `import` builds. Rules pass it redacted (a password would be kept in .snakemake/metadata with the
    params); the job reads it from the config with this."""
    spec = config["traces"]["runs"][run]
    return spec.get("database") or f"{config['results_dir']}/traces/{run}/programs.sqlite"

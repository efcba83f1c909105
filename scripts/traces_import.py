"""Rule traces_import: a JSONL program dump -> the run's embedded SQLite database."""
from difflab import workflow
from difflab.traces import stages

workflow.run(snakemake, lambda: stages.import_programs(snakemake.input.dump, snakemake.output.database))

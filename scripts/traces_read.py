"""Rule traces_read: the run's programs, streamed from its database in pages -> programs.parquet."""
from difflab import workflow
from difflab.traces import run_database, stages

p = snakemake.params
database = run_database(snakemake.config, snakemake.wildcards.run)  # params.database is redacted
options = snakemake.config["traces"]["db"]  # connection settings: not params, as they change no row
workflow.run(snakemake, lambda: stages.snapshot_programs(database, snakemake.output.programs, version=p.version,
                                                         db_options=options))

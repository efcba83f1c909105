"""Rule traces_read: the run's programs, streamed from its database in pages -> programs.parquet."""
from difflab import workflow
from difflab.traces import stages

p = snakemake.params
workflow.run(snakemake, lambda: stages.snapshot_programs(p.database, snakemake.output.programs, version=p.version,
                                                         db_options=p.db))

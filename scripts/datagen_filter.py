"""Rule datagen_filter: PII redaction and quality filters -> filtered.jsonl + filter_report.json."""
from difflab import workflow
from difflab.datagen import stages

o, p = snakemake.output, snakemake.params
workflow.run(snakemake, lambda: stages.filter_stage(snakemake.input.generated, o.filtered, o.report,
                                                    filter_section=p.filter, privacy_section=p.privacy))

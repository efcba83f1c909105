"""Rule datagen_generate: a recipe's generation steps through the LLM client -> generated.jsonl + reports."""
from difflab import workflow
from difflab.datagen import stages

o = snakemake.output
workflow.run(snakemake, lambda: stages.generate(workflow.rule_config(snakemake), snakemake.wildcards.recipe,
                                                snakemake.input.seeds, o.generated, o.report, o.usage))

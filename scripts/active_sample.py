"""Rule active_sample: iteration i's prompts (initial, or targeted at the chosen clusters) answered by both models."""
from difflab import workflow
from difflab.active import stages

i, w = snakemake.input, snakemake.wildcards
workflow.run(snakemake, lambda: stages.sample(
    int(w.iteration), snakemake.output.texts, base=i.base, finetuned=i.finetuned, config=snakemake.config,
    section=snakemake.params.section, mode=w.mode, prompt_file=str(i.prompts) if i.prompts else None,
    previous_state=(i.state or [None])[0],
    previous_assignments=(i.assignments or [None])[0], previous_texts=list(i.texts)))

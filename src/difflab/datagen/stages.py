"""A datagen recipe end to end, one function per stage (rules/datagen.smk and `difflab datagen` call these).

    generate   seeds (PII redacted first, so no PII reaches the LLM or its cache) -> every generation
               step the recipe names -> generated.jsonl + generation_report.json + llm_usage.json
    filter     PII redaction of every field, then QualityFilter -> filtered.jsonl + filter_report.json
    metrics    metrics.json (every metric the recipe lists)
    dashboard  dashboard.png (one page, in the report)
    export     train / validation JSONL in the format finetuning tools read (chat messages or Alpaca)
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from difflab import io
from difflab.datagen import filters, metrics, plots, privacy
from difflab.datagen.generator import Generator
from difflab.datagen.records import Results

log = logging.getLogger(__name__)


def redactor(section: dict) -> privacy.Redactor:
    return privacy.Redactor(section["types"], phone_region=section["phone_region"],
                            national_ids=section["national_ids"])


def run_recipe(generator: Generator, seeds: Results, recipe: dict) -> Results:
    """Every generation step of a recipe, in a fixed order, over the seeds and what came before."""
    out = Results(seeds) if recipe["include_seeds"] else Results()
    grown = Results()
    if recipe["self_instruct"]:
        grown = generator.generate_from_seed(seeds, recipe["self_instruct"])
        out += grown
    pool = list(seeds) + list(grown)
    if recipe["evol_rounds"]:
        out += generator.evolve_instructions(pool[:recipe["evol_instructions"]], rounds=recipe["evol_rounds"])
    for spec in recipe["templates"]:
        out += generator.generate_from_template(spec["template"], spec["variables"], mode=spec.get("mode", "product"),
                                                n=spec.get("n"))
    if recipe["constraints"]:
        spec = dict(recipe["constraints"])
        count = spec.pop("instructions", 4)
        out += generator.generate_with_constraints(pool[:count], spec)
    augment = recipe["augment"]
    base = pool[:augment["examples"]]
    if augment["paraphrases"]:
        out += generator.augment_by_paraphrasing(base, n=augment["paraphrases"])
    if augment["styles"]:
        out += generator.augment_with_style_variation(base, augment["styles"])
    if augment["domains"]:
        out += generator.augment_with_domain_transfer(base, augment["domains"])
    return out


def generate(config: dict, recipe_name: str, seeds_path: str | Path, out: str | Path, report_out: str | Path,
             usage_out: str | Path) -> Results:
    from difflab.llm import client_from_config

    recipe = config["datagen"]["recipes"][recipe_name]
    seeds = Results.load(seeds_path)
    seeds, seed_pii = privacy.redact_results(seeds, redactor(recipe["privacy"])) if recipe["privacy"]["enabled"] \
        else (seeds, None)
    client = client_from_config(config)
    generator = Generator(client, recipe["generation"])
    results = run_recipe(generator, seeds, recipe)
    results.save(out)
    io.write_json(report_out, {"recipe": recipe_name, "seeds": len(seeds), "examples": len(results),
                               "by_method": dict(sorted(Counter(e.method for e in results).items())),
                               "seed_privacy": seed_pii, "methods": generator.reports})
    client.write_usage(usage_out)
    log.info("generated %d examples for recipe %s", len(results), recipe_name)
    return results


def quality_filter(section: dict) -> filters.QualityFilter:
    keys = ("min_instruction_chars", "max_instruction_chars", "min_output_chars", "max_output_chars",
            "exact_dedup", "near_dup_threshold", "num_perm", "shingle_size")
    return filters.QualityFilter(**{k: section[k] for k in keys})


def filter_stage(generated: str | Path, out: str | Path, report_out: str | Path, *, filter_section: dict,
                 privacy_section: dict) -> Results:
    results = Results.load(generated)
    pii = None
    if privacy_section["enabled"]:
        results, pii = privacy.redact_results(results, redactor(privacy_section))
    kept, report = quality_filter(filter_section).apply(results)
    kept.save(out)
    io.write_json(report_out, {**report.to_dict(), "privacy": pii})
    return kept


def metrics_stage(filtered: str | Path, out: str | Path, *, names: list[str], perplexity_model: str | None,
                  embedding_model: str, n_topics: int, seed: int) -> dict:
    results = Results.load(filtered)
    report = metrics.compute(results, names, perplexity_model=perplexity_model, embedding_model=embedding_model,
                             n_topics=n_topics, seed=seed)
    io.write_json(out, report)
    return report


def dashboard_stage(filtered: str | Path, metrics_path: str | Path, out: str | Path, title: str,
                    panels: dict[str, str | Path] | None = None) -> Path:
    """The one-page dashboard, and each panel alone when `panels` maps panel names to files."""
    results, report = Results.load(filtered), io.read_json(metrics_path)
    for name, path in (panels or {}).items():
        plots.panel(name, results, report, path)
    return plots.dashboard(results, report, out, title=title)


def export_stage(filtered: str | Path, train_out: str | Path, validation_out: str | Path, *, fmt: str,
                 validation_fraction: float, seed: int, system: str | None = None) -> tuple[int, int]:
    train, validation = Results.load(filtered).split(validation_fraction, seed)
    train.export(train_out, fmt, system=system)
    validation.export(validation_out, fmt, system=system)
    return len(train), len(validation)


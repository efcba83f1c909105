# Datagen: synthetic instruction data, one folder per named recipe: {results}/datagen/{recipe}/.

wildcard_constraints:
    recipe=alternatives(DATAGEN["recipes"]),


rule datagen_generate:
    input:
        seeds=lambda wildcards: repo_path(DATAGEN["recipes"][wildcards.recipe]["seeds"]),
        models=llm_model_inputs(),
    output:
        generated=f"{DATAGEN_DIR}/generated.jsonl",
        report=f"{DATAGEN_DIR}/generation_report.json",
        usage=f"{DATAGEN_DIR}/llm_usage.json",
    log:
        "logs/datagen/{recipe}/generate.log",
    params:
        llm=config["llm"],
        datagen=lambda wildcards: {"recipes": {wildcards.recipe: datagen_generation_settings(wildcards.recipe)}},
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../envs/llm.yaml"
    message:
        "Generating instruction data for recipe {wildcards.recipe} with {params.llm[backend]} model {params.llm[model]}"
    script:
        "../scripts/datagen_generate.py"


rule datagen_filter:
    input:
        generated=rules.datagen_generate.output.generated,
    output:
        filtered=f"{DATAGEN_DIR}/filtered.jsonl",
        report=f"{DATAGEN_DIR}/filter_report.json",
    log:
        "logs/datagen/{recipe}/filter.log",
    params:
        filter=lambda wildcards: DATAGEN["recipes"][wildcards.recipe]["filter"],
        privacy=lambda wildcards: DATAGEN["recipes"][wildcards.recipe]["privacy"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../envs/analysis.yaml"
    message:
        "Redacting PII and filtering the generated data of recipe {wildcards.recipe}"
    script:
        "../scripts/datagen_filter.py"


rule datagen_metrics:
    input:
        filtered=rules.datagen_filter.output.filtered,
        model=datagen_perplexity_model_input,
    output:
        metrics=f"{DATAGEN_DIR}/metrics.json",
    log:
        "logs/datagen/{recipe}/metrics.log",
    params:
        names=lambda wildcards: DATAGEN["recipes"][wildcards.recipe]["metrics"],
        n_topics=lambda wildcards: DATAGEN["recipes"][wildcards.recipe]["n_topics"],
        embedding_model=config["embedding"]["model"],
        seed=lambda wildcards: DATAGEN["recipes"][wildcards.recipe]["generation"].get("seed", 0),
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/analysis.yaml"
    message:
        "Measuring the filtered data of recipe {wildcards.recipe}: {params.names}"
    script:
        "../scripts/datagen_metrics.py"


rule datagen_dashboard:
    input:
        filtered=rules.datagen_filter.output.filtered,
        metrics=rules.datagen_metrics.output.metrics,
    output:
        dashboard=report(f"{DATAGEN_DIR}/dashboard.png", category="datagen", subcategory="{recipe}",
                         caption="../docs/report/datagen_dashboard.rst"),
        panels=expand(f"{DATAGEN_DIR}/plots/{{panel}}.png", panel=DATAGEN_PANELS, allow_missing=True),
    log:
        "logs/datagen/{recipe}/dashboard.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/analysis.yaml"
    message:
        "Drawing the dashboard of recipe {wildcards.recipe}"
    script:
        "../scripts/datagen_dashboard.py"


rule datagen_export:
    input:
        filtered=rules.datagen_filter.output.filtered,
    output:
        train=f"{DATAGEN_DIR}/train.jsonl",
        validation=f"{DATAGEN_DIR}/validation.jsonl",
    log:
        "logs/datagen/{recipe}/export.log",
    params:
        export=lambda wildcards: DATAGEN["recipes"][wildcards.recipe]["export"],
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/analysis.yaml"
    message:
        "Exporting recipe {wildcards.recipe} as {params.export[format]} train/validation files"
    script:
        "../scripts/datagen_export.py"

# Diffmining: the tokens whose probability a finetune changed most, per model pair, method and dataset.
# Run folder: {results}/diffmining/{base}/{finetuned}/{extraction}/{setting}/ (see rules/common.smk).

wildcard_constraints:
    base=alternatives(list(MODELS) + list(ORGANISMS)),
    finetuned=alternatives(list(MODELS) + list(ORGANISMS)),
    extraction=alternatives(EXTRACTIONS),
    setting=re.escape(run_setting()),
    dsetting=re.escape(data_setting()),
    dataset=alternatives(DIFFMINING["datasets"]),
    ordering=alternatives(ORDERINGS),
    role="base|finetuned",


rule diffmining_tokenize:
    input:
        model=lambda wildcards: any_model_input(wildcards.base),
        data=lambda wildcards: repo_path(diffmining_dataset(wildcards)["path"]),
    output:
        tokens=DATA,
    log:
        "logs/diffmining/tokenize/{base}/{dsetting}/{dataset}.log",
    params:
        dataset=diffmining_dataset,
        n_samples=DIFFMINING["n_samples"],
        max_tokens=DIFFMINING["max_tokens_per_sample"],
        seed=DIFFMINING["seed"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/torch.yaml"
    message:
        "Tokenizing dataset {wildcards.dataset} with the tokenizer of {wildcards.base}"
    script:
        "../scripts/diffmining_tokenize.py"


rule diffmining_logits:
    input:
        model=lambda wildcards: any_model_input(getattr(wildcards, wildcards.role)),
        tokens=diffmining_tokens,
    output:
        logits=temp(f"{RUN}/logits/{{role}}/{{dataset}}.safetensors"),
    log:
        "logs/diffmining/logits/{base}/{finetuned}/{extraction}/{setting}/{role}-{dataset}.log",
    params:
        method=lambda wildcards: EXTRACTIONS[wildcards.extraction],
        extraction=extraction_params,
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=1,
    conda:
        "../envs/torch.yaml"
    message:
        "Extracting {params.method} logits of the {wildcards.role} model on {wildcards.dataset} (fp16, on disk)"
    script:
        "../scripts/diffmining_logits.py"


rule diffmining_reduce:
    input:
        unpack(diffmining_reduce_inputs),
    output:
        **diffmining_reduce_outputs(),
    log:
        "logs/diffmining/reduce/{base}/{finetuned}/{extraction}/{setting}/{dataset}.log",
    params:
        method=lambda wildcards: EXTRACTIONS[wildcards.extraction],
        extraction=extraction_params,
        k=DIFFMINING["top_k"],
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=1,
    conda:
        "../envs/torch.yaml"
    message:
        "Diffing {wildcards.finetuned} against {wildcards.base} ({params.method}) on {wildcards.dataset}, top-{params.k}"
    script:
        "../scripts/diffmining_reduce.py"


rule diffmining_ordering:
    input:
        reductions=f"{RUN}/{{dataset}}.reductions.safetensors",
        base=lambda wildcards: any_model_input(wildcards.base),
    output:
        orderings=f"{RUN}/{{ordering}}/{{dataset}}/orderings.json",
        scatter=report(
            f"{RUN}/{{ordering}}/{{dataset}}/scatter.png",
            caption="../docs/report/diffmining_scatter.rst",
            category="Diffmining",
            subcategory="{base} -> {finetuned} ({extraction})",
            labels={"dataset": "{dataset}", "ordering": "{ordering}", "figure": "scatter"},
        ),
        bar=report(
            f"{RUN}/{{ordering}}/{{dataset}}/bar.png",
            caption="../docs/report/diffmining_bar.rst",
            category="Diffmining",
            subcategory="{base} -> {finetuned} ({extraction})",
            labels={"dataset": "{dataset}", "ordering": "{ordering}", "figure": "bar"},
        ),
    log:
        "logs/diffmining/ordering/{base}/{finetuned}/{extraction}/{setting}/{ordering}-{dataset}.log",
    params:
        kind=lambda wildcards: ORDERINGS[wildcards.ordering],
        tokens=DIFFMINING["tokens"],
        nmf=nmf_params,
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        "../envs/analysis.yaml"
    message:
        "Ordering tokens by {wildcards.ordering} for {wildcards.finetuned} vs {wildcards.base} on {wildcards.dataset}"
    script:
        "../scripts/diffmining_ordering.py"


rule diffmining_plots:
    input:
        reductions=f"{RUN}/{{dataset}}.reductions.safetensors",
        base=lambda wildcards: any_model_input(wildcards.base),
    output:
        occurrence=report(
            f"{RUN}/plots/{{dataset}}_occurrence.png",
            caption="../docs/report/diffmining_occurrence.rst",
            category="Diffmining",
            subcategory="{base} -> {finetuned} ({extraction})",
            labels={"dataset": "{dataset}", "ordering": "-", "figure": "occurrence"},
        ),
        positions=report(
            f"{RUN}/plots/{{dataset}}_positions.png",
            caption="../docs/report/diffmining_positions.rst",
            category="Diffmining",
            subcategory="{base} -> {finetuned} ({extraction})",
            labels={"dataset": "{dataset}", "ordering": "-", "figure": "positions"},
        ),
    log:
        "logs/diffmining/plots/{base}/{finetuned}/{extraction}/{setting}/{dataset}.log",
    params:
        label=lambda wildcards: f"{wildcards.finetuned} vs {wildcards.base}",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/analysis.yaml"
    message:
        "Plotting top-K occurrences of {wildcards.finetuned} vs {wildcards.base} on {wildcards.dataset}"
    script:
        "../scripts/diffmining_plots.py"


rule diffmining_metadata:
    input:
        reductions=lambda wildcards: [f"{RUN.format(**wildcards)}/{d}.reductions.safetensors"
                                      for d in DIFFMINING["datasets"]],
    output:
        metadata=f"{RUN}/run_metadata.json",
    log:
        "logs/diffmining/metadata/{base}/{finetuned}/{extraction}/{setting}.log",
    params:
        diffmining=DIFFMINING,
        datasets=list(DIFFMINING["datasets"]),
        pair=lambda wildcards: {"base": wildcards.base, "finetuned": wildcards.finetuned,
                                "extraction": wildcards.extraction},
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    conda:
        "../envs/analysis.yaml"
    message:
        "Writing run metadata of {wildcards.finetuned} vs {wildcards.base} ({wildcards.extraction})"
    script:
        "../scripts/diffmining_metadata.py"


rule diffmining_overview:
    input:
        orderings=diffmining_orderings_inputs,
    output:
        overview=f"{RUN}/overview.json",
    log:
        "logs/diffmining/overview/{base}/{finetuned}/{extraction}/{setting}.log",
    params:
        overview=DIFFMINING["overview"],
        datasets=list(DIFFMINING["datasets"]),
        groups=[f"{ORDERINGS[ordering]}/{dataset}" for ordering, dataset in diffmining_ordering_groups()],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    conda:
        "../envs/analysis.yaml"
    message:
        "Building the agent overview of {wildcards.finetuned} vs {wildcards.base} ({wildcards.extraction})"
    script:
        "../scripts/diffmining_overview.py"


rule diffmining_ask:
    input:
        overview=f"{RUN}/overview.json",
        models=llm_model_inputs(),
    output:
        answer=f"{RUN}/answer.json",
    log:
        "logs/diffmining/ask/{base}/{finetuned}/{extraction}/{setting}.log",
    params:
        **llm_params(),
        diffmining={"ask": DIFFMINING["ask"]},
    threads: 2
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        "../envs/llm.yaml"
    message:
        "Asking {params.llm[model]} what {wildcards.finetuned} was finetuned on, from the overview"
    script:
        "../scripts/diffmining_ask.py"


rule diffmining_relevance:
    input:
        orderings=f"{RUN}/{{ordering}}/{{dataset}}/orderings.json",
        models=llm_model_inputs(),
    output:
        evaluation=f"{RUN}/{{ordering}}/{{dataset}}/eval.json",
    log:
        "logs/diffmining/relevance/{base}/{finetuned}/{extraction}/{setting}/{ordering}-{dataset}.log",
    params:
        **llm_params(),
        description=lambda wildcards: pair_description(wildcards.base, wildcards.finetuned),
        top_n=DIFFMINING["relevance"]["top_n"],
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/llm.yaml"
    message:
        "Grading the relevance of {wildcards.ordering} tokens ({wildcards.dataset}) with {params.llm[model]}"
    script:
        "../scripts/diffmining_relevance.py"

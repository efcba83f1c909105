# Active sampling: iterations of sampling both models where they differ, then hypotheses in words.
# {results}/active/{base}/{finetuned}/{mode}/{asetting}/iter{i}/ - each iteration's clustering is a
# checkpoint; whether the next runs is difflab.active.iterations.decide on the current config.


wildcard_constraints:
    mode="active|exhaustive",
    asetting="k[^/]+",
    iteration=r"\d+",


rule active_sample:
    input:
        base=lambda wildcards: any_model_input(wildcards.base),
        finetuned=lambda wildcards: any_model_input(wildcards.finetuned),
        prompts=repo_path(ACTIVE["prompts"]) if ACTIVE["prompts"] else [],
        state=active_previous("clusters.json"),
        assignments=active_previous("assignments.parquet"),
        texts=active_previous("texts"),
    output:
        texts=f"{ACTIVE_RUN}/iter{{iteration}}/texts.jsonl",
    log:
        "logs/active/{base}/{finetuned}/{mode}/{asetting}/iter{iteration}.sample.log",
    params:
        section=active_generation_section(),
        llm=config["llm"]["local"],
    threads: 2
    resources:
        mem_mb=6000,
        runtime=120,
    conda:
        "../envs/torch.yaml"
    message:
        "Active sampling ({wildcards.mode}) iteration {wildcards.iteration}: {wildcards.finetuned} and {wildcards.base}"
    script:
        "../scripts/active_sample.py"


rule active_embed:
    input:
        texts=f"{ACTIVE_RUN}/iter{{iteration}}/texts.jsonl",
    output:
        embeddings=f"{ACTIVE_RUN}/iter{{iteration}}/embeddings.safetensors",
    log:
        "logs/active/{base}/{finetuned}/{mode}/{asetting}/iter{iteration}.embed.log",
    params:
        model=ACTIVE["embedding_model"],
        batch_size=config["embedding"]["batch_size"],
    threads: 2
    resources:
        mem_mb=3000,
        runtime=30,
    conda:
        "../envs/torch.yaml"
    message:
        "Embedding the texts of active iteration {wildcards.iteration}"
    script:
        "../scripts/active_embed.py"


checkpoint active_cluster:
    input:
        texts=lambda wildcards: active_iteration_files(wildcards, "texts.jsonl", int(wildcards.iteration)),
        embeddings=lambda wildcards: active_iteration_files(wildcards, "embeddings.safetensors", int(wildcards.iteration)),
        previous=active_previous("assignments.parquet"),
        previous_state=active_previous("clusters.json"),
    output:
        state=f"{ACTIVE_RUN}/iter{{iteration}}/clusters.json",
        assignments=f"{ACTIVE_RUN}/iter{{iteration}}/assignments.parquet",
    log:
        "logs/active/{base}/{finetuned}/{mode}/{asetting}/iter{iteration}.cluster.log",
    params:
        section={k: ACTIVE[k] for k in ("n_clusters", "seed", "n_areas", "min_cluster_size", "samples_per_iteration")},
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    conda:
        "../envs/analysis.yaml"
    message:
        "Clustering every text up to active iteration {wildcards.iteration} and choosing where to sample next"
    script:
        "../scripts/active_cluster.py"


rule active_hypotheses:
    input:
        state=lambda wildcards: active_iteration_files(wildcards, "clusters.json")[-1],
        assignments=lambda wildcards: active_iteration_files(wildcards, "assignments.parquet")[-1],
        texts=lambda wildcards: active_iteration_files(wildcards, "texts.jsonl"),
        models=llm_model_inputs(),
    output:
        hypotheses=f"{ACTIVE_RUN}/hypotheses_unvalidated.json",
    log:
        "logs/active/{base}/{finetuned}/{mode}/{asetting}/hypotheses.log",
    params:
        section=ACTIVE,
        llm=llm_params(),
    threads: 2
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        "../envs/llm.yaml"
    message:
        "Writing hypotheses for the divergent clusters of {wildcards.finetuned} vs {wildcards.base} ({wildcards.mode})"
    script:
        "../scripts/active_hypotheses.py"


rule active_heldout:
    input:
        base=lambda wildcards: any_model_input(wildcards.base),
        finetuned=lambda wildcards: any_model_input(wildcards.finetuned),
        prompts=repo_path(ACTIVE["heldout_prompts"]),
    output:
        pairs=f"{ACTIVE_PAIR}/heldout_{{hsetting}}.jsonl",
    log:
        "logs/active/{base}/{finetuned}/heldout_{hsetting}.log",
    params:
        section={k: ACTIVE[k] for k in ("sampling", "seed", "categories", "topics", "heldout_topics")},
        llm=config["llm"]["local"],
    wildcard_constraints:
        hsetting=re.escape(active_sampling_id()),
    threads: 2
    resources:
        mem_mb=6000,
        runtime=60,
    conda:
        "../envs/torch.yaml"
    message:
        "Generating held-out pairs (same prompt, both models) for {wildcards.finetuned} vs {wildcards.base}"
    script:
        "../scripts/active_heldout.py"


rule active_validate:
    input:
        hypotheses=f"{ACTIVE_RUN}/hypotheses_unvalidated.json",
        heldout=f"{ACTIVE_PAIR}/heldout_{active_sampling_id()}.jsonl",
        models=llm_model_inputs() if ACTIVE["judge"] == "llm" else [],
    output:
        hypotheses=f"{ACTIVE_RUN}/hypotheses.json",
    log:
        "logs/active/{base}/{finetuned}/{mode}/{asetting}/validate.log",
    params:
        section=ACTIVE,
        llm=llm_params(),
    threads: 2
    resources:
        mem_mb=3000,
        runtime=30,
    conda:
        "../envs/llm.yaml"
    message:
        "Validating the hypotheses of {wildcards.finetuned} vs {wildcards.base} ({wildcards.mode}) on held-out pairs"
    script:
        "../scripts/active_validate.py"


rule active_report:
    input:
        states=lambda wildcards: active_iteration_files(wildcards, "clusters.json"),
        assignments=lambda wildcards: active_iteration_files(wildcards, "assignments.parquet")[-1],
        embeddings=lambda wildcards: active_iteration_files(wildcards, "embeddings.safetensors"),
        hypotheses=f"{ACTIVE_RUN}/hypotheses.json",
    output:
        report=f"{ACTIVE_RUN}/report.json",
        projection=report(f"{ACTIVE_RUN}/projection.png", caption="../docs/report/active.rst", category="Active sampling"),
        divergence=report(f"{ACTIVE_RUN}/divergence.png", caption="../docs/report/active.rst", category="Active sampling"),
        convergence=report(f"{ACTIVE_RUN}/convergence.png", caption="../docs/report/active.rst", category="Active sampling"),
    log:
        "logs/active/{base}/{finetuned}/{mode}/{asetting}/report.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/analysis.yaml"
    message:
        "Active sampling report for {wildcards.finetuned} vs {wildcards.base} ({wildcards.mode})"
    script:
        "../scripts/active_report.py"

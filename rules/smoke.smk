# Smoke target: a real generation and a real embedding, saved and summarised.


rule smoke_generate:
    input:
        prompts=repo_path(config["smoke"]["prompts"]),
        models=llm_model_inputs(),
    output:
        generations=f"{smoke_dir()}/generations.jsonl",
        usage=f"{smoke_dir()}/llm_usage.json",
    log:
        f"logs/smoke/{llm_name()}/generate.log",
    params:
        **llm_params(),
        smoke=config["smoke"],
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/llm.yaml"
    message:
        "Generating answers to the smoke prompts with {params.llm[backend]} model {params.llm[model]}"
    script:
        "../scripts/smoke_generate.py"


rule smoke_embed:
    input:
        sentences=repo_path(config["smoke"]["sentences"]),
    output:
        embeddings=f"{RESULTS}/smoke/embeddings/{slug(config['embedding']['model'])}.safetensors",
        plot=report(
            f"{RESULTS}/smoke/embeddings/{slug(config['embedding']['model'])}_similarity.png",
            caption="../docs/report/smoke_similarity.rst",
            category="Smoke",
        ),
    log:
        f"logs/smoke/embed-{slug(config['embedding']['model'])}.log",
    params:
        embedding=config["embedding"],
    threads: 2
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/torch.yaml"
    message:
        "Embedding the smoke sentences with {params.embedding[model]}"
    script:
        "../scripts/smoke_embed.py"


rule smoke_summary:
    input:
        models=[model_dir(name) for name in MODELS],
        generations=rules.smoke_generate.output.generations,
        usage=rules.smoke_generate.output.usage,
        embeddings=rules.smoke_embed.output.embeddings,
        plot=rules.smoke_embed.output.plot,
    output:
        json=f"{smoke_dir()}/summary.json",
        md=f"{smoke_dir()}/summary.md",
    log:
        f"logs/smoke/{llm_name()}/summary.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/analysis.yaml"
    message:
        "Summarising the smoke run"
    script:
        "../scripts/smoke_summary.py"

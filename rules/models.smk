# Models: every configured model becomes a plain transformers folder once, under results/models/.


wildcard_constraints:
    model="|".join(re.escape(name) for name in MODELS) or "(?!)",


rule convert_model:
    output:
        model_dir=directory(f"{RESULTS}/models/{{model}}"),
    log:
        "logs/models/{model}.log",
    params:
        spec=lambda wildcards: MODELS[wildcards.model],
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/torch.yaml"
    message:
        "Materialising model {wildcards.model} as a transformers folder"
    script:
        "../scripts/convert_model.py"

# Model organisms: finetune the base model on chosen data (a known change), then prove it was learned.


wildcard_constraints:
    organism="|".join(re.escape(name) for name in ORGANISMS) or "(?!)",


rule finetune_organism:
    input:
        base=organism_base_input(),
        data=lambda wildcards: repo_path(ORGANISMS[wildcards.organism]["data"]),
    output:
        model_dir=directory(f"{RESULTS}/organisms/{{organism}}"),
        loss=f"{RESULTS}/organisms/{{organism}}.loss.json",
        plot=report(
            f"{RESULTS}/organisms/{{organism}}.loss.png",
            caption="../docs/report/organism_loss.rst",
            category="Organisms",
            subcategory="{organism}",
        ),
    log:
        "logs/organisms/{organism}.finetune.log",
    params:
        recipe=lambda wildcards: organism_recipe(wildcards.organism),
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=1,
    conda:
        "../envs/torch.yaml"
    message:
        "Finetuning organism {wildcards.organism} from {input.base}"
    script:
        "../scripts/finetune_organism.py"


rule probe_organism:
    input:
        organism=rules.finetune_organism.output.model_dir,
        base=organism_base_input(),
        on_topic=lambda wildcards: repo_path(ORGANISMS[wildcards.organism]["probes"]),
        off_topic=repo_path(config["organisms"]["probe"]["off_topic"]),
    output:
        report=f"{RESULTS}/organisms/{{organism}}.probes.json",
    log:
        "logs/organisms/{organism}.probes.log",
    params:
        probe=config["organisms"]["probe"],
    threads: 2
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        "../envs/torch.yaml"
    message:
        "Checking that organism {wildcards.organism} learned its change"
    script:
        "../scripts/probe_organism.py"

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
        train_data=lambda wildcards: repo_path(ORGANISMS[wildcards.organism]["data"]),
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


rule organism_scoreboard:
    input:
        orderings=scoreboard_files(),
        probes=[f"{RESULTS}/organisms/{name}.probes.json" for name in scoreboard_organisms() if ORGANISMS[name]["probes"]],
        base=organism_base_input(),
        models=llm_model_inputs() if SCOREBOARD["judge"]["enabled"] else [],
        evals=scoreboard_evals(),
    output:
        scoreboard=f"{RESULTS}/scoreboard/scoreboard.json",
        table=f"{RESULTS}/scoreboard/scoreboard.md",
        heatmap=report(
            f"{RESULTS}/scoreboard/scoreboard.png",
            caption="../docs/report/scoreboard.rst",
            category="Scoreboard",
        ),
    log:
        "logs/scoreboard.log",
    params:
        inputs=scoreboard_inputs(),
        scored=scoreboard_organisms(),
        scoreboard=SCOREBOARD,
        organisms=config["organisms"],
        **(llm_params() if SCOREBOARD["judge"]["enabled"] else {}),  # the judge's answers depend on them
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/analysis.yaml"
    message:
        "Scoring every diffing method on recovering each organism's topic"
    script:
        "../scripts/organism_scoreboard.py"

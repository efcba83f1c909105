# Libgen: distil a library from a whole training set, one folder per experiment:
# {results}/libgen/{experiment}/stage0 .. stage6, baseline, report. Stage 5 and every extension cycle
# are checkpoints; whether the next cycle runs is difflab.libgen.settings.decide on the current config.

wildcard_constraints:
    experiment=alternatives(LIBGEN["experiments"]),
    cycle=r"\d+",


rule libgen_foundation:
    input:
        domain=libgen_domain_files,
    output:
        domain=directory(f"{LIBGEN_DIR}/stage0/domain"),
        api=f"{LIBGEN_DIR}/stage0/foundation_api.md",
        api_json=f"{LIBGEN_DIR}/stage0/foundation_api.json",
        summary=f"{LIBGEN_DIR}/stage0/stage0_summary.json",
    log:
        "logs/libgen/{experiment}/stage0.log",
    params:
        source=libgen_domain,
        settings=libgen_settings("foundation"),
    threads: 2
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        "../envs/llm.yaml"
    message:
        "Libgen {wildcards.experiment} stage 0: foundation API, every reference program checked in the sandbox"
    script:
        "../scripts/libgen_foundation.py"


rule libgen_discover:
    input:
        stage0=rules.libgen_foundation.output.summary,
        models=llm_model_inputs(),
    output:
        proposal=f"{LIBGEN_DIR}/stage1/api_proposal_v1.md",
        summaries=f"{LIBGEN_DIR}/stage1/summaries.jsonl",
        summary=f"{LIBGEN_DIR}/stage1/stage1_summary.json",
    log:
        "logs/libgen/{experiment}/stage1.log",
    params:
        settings=libgen_settings("discover"),
        llm=config["llm"],
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        "../envs/llm.yaml"
    message:
        "Libgen {wildcards.experiment} stage 1: hierarchical summaries of every training instruction"
    script:
        "../scripts/libgen_discover.py"


rule libgen_refine:
    input:
        stage0=rules.libgen_foundation.output.summary,
        proposal=rules.libgen_discover.output.proposal,
        models=llm_model_inputs(),
    output:
        proposal=f"{LIBGEN_DIR}/stage2/api_proposal_final.md",
        rounds=f"{LIBGEN_DIR}/stage2/refinement.jsonl",
        summary=f"{LIBGEN_DIR}/stage2/stage2_summary.json",
    log:
        "logs/libgen/{experiment}/stage2.log",
    params:
        settings=libgen_settings("refine"),
        llm=config["llm"],
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../envs/llm.yaml"
    message:
        "Libgen {wildcards.experiment} stage 2: refining the API proposal against task samples"
    script:
        "../scripts/libgen_refine.py"


rule libgen_implement:
    input:
        stage0=rules.libgen_foundation.output.summary,
        proposal=rules.libgen_refine.output.proposal,
        models=llm_model_inputs(),
    output:
        library=directory(f"{LIBGEN_DIR}/stage3/generated_lib"),
        modules=f"{LIBGEN_DIR}/stage3/modules.json",
        summary=f"{LIBGEN_DIR}/stage3/stage3_summary.json",
    log:
        "logs/libgen/{experiment}/stage3.log",
    params:
        settings=libgen_settings("implement"),
        llm=config["llm"],
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        "../envs/llm.yaml"
    message:
        "Libgen {wildcards.experiment} stage 3: implementing the proposal module by module (smoke check, repairs)"
    script:
        "../scripts/libgen_implement.py"


rule libgen_document:
    input:
        stage0=rules.libgen_foundation.output.summary,
        library=rules.libgen_implement.output.library,
        models=llm_model_inputs(),
    output:
        reference=f"{LIBGEN_DIR}/stage4/dsl_reference.md",
        guide=f"{LIBGEN_DIR}/stage4/usage_guide.md",
        system_prompt=f"{LIBGEN_DIR}/stage4/system_prompt.txt",
        summary=f"{LIBGEN_DIR}/stage4/stage4_summary.json",
    log:
        "logs/libgen/{experiment}/stage4.log",
    params:
        settings=libgen_settings("document"),
        llm=config["llm"],
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../envs/llm.yaml"
    message:
        "Libgen {wildcards.experiment} stage 4: reference, usage guide and system prompt"
    script:
        "../scripts/libgen_document.py"


checkpoint libgen_validate:
    input:
        stage0=rules.libgen_foundation.output.summary,
        library=rules.libgen_implement.output.library,
        system_prompt=rules.libgen_document.output.system_prompt,
        models=llm_model_inputs(),
    output:
        report=f"{LIBGEN_DIR}/stage5/validation_report.json",
        programs=f"{LIBGEN_DIR}/stage5/programs.jsonl",
        failures=f"{LIBGEN_DIR}/stage5/failures.jsonl",
        state=f"{LIBGEN_DIR}/stage5/cycle.json",
        summary=f"{LIBGEN_DIR}/stage5/stage5_summary.json",
    log:
        "logs/libgen/{experiment}/stage5.log",
    params:
        settings=libgen_settings("validate"),
        llm=config["llm"],
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        "../envs/llm.yaml"
    message:
        "Libgen {wildcards.experiment} stage 5: programs for the validation tasks with the generated library, run in the sandbox"
    script:
        "../scripts/libgen_validate.py"


rule libgen_baseline:
    input:
        stage0=rules.libgen_foundation.output.summary,
        models=llm_model_inputs(),
    output:
        report=f"{LIBGEN_DIR}/baseline/validation_report.json",
        programs=f"{LIBGEN_DIR}/baseline/programs.jsonl",
        summary=f"{LIBGEN_DIR}/baseline/baseline_summary.json",
    log:
        "logs/libgen/{experiment}/baseline.log",
    params:
        settings=libgen_settings("validate"),
        llm=config["llm"],
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        "../envs/llm.yaml"
    message:
        "Libgen {wildcards.experiment} baseline: the same validation with the foundation alone"
    script:
        "../scripts/libgen_baseline.py"


checkpoint libgen_extend:
    input:
        stage0=rules.libgen_foundation.output.summary,
        state=libgen_previous("cycle.json"),
        failures=libgen_previous("failures.jsonl"),
        library=libgen_previous("library"),
        models=llm_model_inputs(),
    output:
        library=directory(f"{LIBGEN_DIR}/stage6/cycle{{cycle}}/library"),
        report=f"{LIBGEN_DIR}/stage6/cycle{{cycle}}/validation_report.json",
        failures=f"{LIBGEN_DIR}/stage6/cycle{{cycle}}/failures.jsonl",
        extension=f"{LIBGEN_DIR}/stage6/cycle{{cycle}}/extension.json",
        state=f"{LIBGEN_DIR}/stage6/cycle{{cycle}}/cycle.json",
        summary=f"{LIBGEN_DIR}/stage6/cycle{{cycle}}/summary.json",
    log:
        "logs/libgen/{experiment}/stage6.cycle{cycle}.log",
    params:
        settings=libgen_settings("extend"),
        llm=config["llm"],
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        "../envs/llm.yaml"
    message:
        "Libgen {wildcards.experiment} stage 6 cycle {wildcards.cycle}: failures clustered, library extended, re-validated"
    script:
        "../scripts/libgen_extend.py"


rule libgen_report:
    input:
        stage1=rules.libgen_discover.output.summary,
        stage2=rules.libgen_refine.output.summary,
        stage3=rules.libgen_implement.output.summary,
        stage4=rules.libgen_document.output.summary,
        stage5=f"{LIBGEN_DIR}/stage5/stage5_summary.json",
        baseline=rules.libgen_baseline.output.summary,
        cycles=libgen_cycle_states,
    output:
        report=f"{LIBGEN_DIR}/report/libgen_report.json",
        extension=f"{LIBGEN_DIR}/stage6/extension_report.json",
        plot=report(f"{LIBGEN_DIR}/report/scores.png", caption="../docs/report/libgen.rst", category="Libgen"),
    log:
        "logs/libgen/{experiment}/report.log",
    params:
        settings=libgen_settings("report"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/analysis.yaml"
    message:
        "Libgen {wildcards.experiment} report: scores per stage and cycle, tokens by stage, full-scale cost"
    script:
        "../scripts/libgen_report.py"

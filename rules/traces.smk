# Traces: diverse, high-value traces from program search trees, one folder per named run:
# {results}/traces/{run}/ (see rules/common.smk for the run settings and database helpers).

wildcard_constraints:
    run=alternatives(TRACES["runs"]),


rule traces_import:
    input:
        dump=lambda wildcards: repo_path(traces_run(wildcards.run)["import"]),
    output:
        database=f"{TRACES_DIR}/programs.sqlite",
    log:
        "logs/traces/{run}/import.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../envs/db.yaml"
    message:
        "Importing the program dump of traces run {wildcards.run} into its embedded SQLite database"
    script:
        "../scripts/traces_import.py"


rule traces_read:
    input:
        database=traces_database_input,
    output:
        programs=f"{TRACES_DIR}/programs.parquet",
    log:
        "logs/traces/{run}/read.log",
    params:
        # redacted: params are kept in .snakemake/metadata; the job reads the URL from the config
        database=lambda wildcards: difflab_traces_db.redact(traces_database(wildcards.run)),
        version=lambda wildcards: traces_run(wildcards.run)["version"],
        fingerprint=traces_fingerprint,
        # traces.db (page size, pool, retries) changes no row: the job reads it from the config
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../envs/db.yaml"
    message:
        "Reading the programs of traces run {wildcards.run} from its database, page by page"
    script:
        "../scripts/traces_read.py"


rule traces_extract:
    input:
        programs=rules.traces_read.output.programs,
    output:
        traces=f"{TRACES_DIR}/traces.parquet",
        report=f"{TRACES_DIR}/tree_report.json",
    log:
        "logs/traces/{run}/extract.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/db.yaml"
    message:
        "Extracting every root-to-leaf trace of traces run {wildcards.run}"
    script:
        "../scripts/traces_extract.py"


rule traces_backprop:
    input:
        programs=rules.traces_read.output.programs,
        traces=rules.traces_extract.output.traces,
    output:
        nodes=f"{TRACES_DIR}/node_values.parquet",
        values=f"{TRACES_DIR}/trace_values.parquet",
    log:
        "logs/traces/{run}/backprop.log",
    params:
        discount=lambda wildcards: traces_run(wildcards.run)["discount"],
        aggregate=lambda wildcards: traces_run(wildcards.run)["aggregate"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/db.yaml"
    message:
        "Backpropagating rewards (discount {params.discount}, {params.aggregate}) in traces run {wildcards.run}"
    script:
        "../scripts/traces_backprop.py"


rule traces_encode:
    input:
        programs=rules.traces_read.output.programs,
        traces=rules.traces_extract.output.traces,
    output:
        features=f"{TRACES_DIR}/features/{{encoder}}.safetensors",
    log:
        "logs/traces/{run}/encode-{encoder}.log",
    params:
        encoder=traces_encoder_spec,
        fields=lambda wildcards: traces_run(wildcards.run)["fields"],
        pooling=lambda wildcards: traces_run(wildcards.run)["pooling"],
        # only decay pooling reads the discount: under mean or leaf a new discount reruns nothing here
        discount=lambda wildcards: traces_run(wildcards.run)["discount"] if traces_run(wildcards.run)["pooling"] == "decay" else None,
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../envs/analysis.yaml"
    message:
        "Encoding the traces of run {wildcards.run} with the {wildcards.encoder} encoder"
    script:
        "../scripts/traces_encode.py"


rule traces_cluster:
    input:
        features=traces_features,
        traces=rules.traces_extract.output.traces,
        values=rules.traces_backprop.output.values,
    output:
        clustered=f"{TRACES_DIR}/clustered_traces.parquet",
        info=f"{TRACES_DIR}/clusters.json",
    log:
        "logs/traces/{run}/cluster.log",
    params:
        settings=lambda wildcards: {key: traces_run(wildcards.run)[key] for key in
                                    ("value", "metric", "n_clusters", "k_min", "k_max", "silhouette_sample",
                                     "minibatch_above", "seed")},
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../envs/analysis.yaml"
    message:
        "Clustering the traces of run {wildcards.run}"
    script:
        "../scripts/traces_cluster.py"


rule traces_select:
    input:
        clustered=rules.traces_cluster.output.clustered,
        info=rules.traces_cluster.output.info,
        programs=rules.traces_read.output.programs,
        nodes=rules.traces_backprop.output.nodes,
    output:
        selected=f"{TRACES_DIR}/selected_traces.jsonl",
        summary=f"{TRACES_DIR}/summary.json",
        plot=report(f"{TRACES_DIR}/traces.png", category="traces", subcategory="{run}",
                    caption="../docs/report/traces.rst"),
    log:
        "logs/traces/{run}/select.log",
    params:
        per_cluster=lambda wildcards: traces_run(wildcards.run)["per_cluster"],
        sampling=lambda wildcards: traces_run(wildcards.run)["sampling"],
        min_quantile=lambda wildcards: traces_run(wildcards.run)["min_quantile"],
        temperature=lambda wildcards: traces_run(wildcards.run)["temperature"],
        seed=lambda wildcards: traces_run(wildcards.run)["seed"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/analysis.yaml"
    message:
        "Selecting {params.per_cluster} traces per cluster by value in run {wildcards.run}"
    script:
        "../scripts/traces_select.py"

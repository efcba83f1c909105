# Paths, wildcard constraints and helpers shared by every rule file.
import os
import re
import sys

# Scripts run by `script:` import the library from src/ (also in conda envs and on cluster nodes).
sys.path.insert(0, os.path.join(workflow.basedir, "src"))

from difflab import config as difflab_config
from difflab import workflow as difflab_workflow
from difflab.errors import DifflabError
import difflab.traces as difflab_traces
from difflab.traces import db as difflab_traces_db
from difflab import io as difflab_io
from difflab.active import iterations as difflab_active_iterations
from difflab.libgen import settings as difflab_libgen_settings

difflab_workflow.prepare_environment(os.path.join(workflow.basedir, "src"))

# Validate before any job is scheduled (one line naming the key; defaults filled in).
try:
    difflab_config.check(config, difflab_config.load_schema(os.path.join(workflow.basedir, "config", "schema.yaml")))
except DifflabError as exc:
    sys.exit(f"difflab: {exc}")

RESULTS = config["results_dir"]
MODELS = config["models"]
ORGANISMS = config["organisms"]["definitions"]


def repo_path(path):
    """A relative input path as given if it exists in the working directory, else inside the repo."""
    if os.path.isabs(path) or os.path.exists(path):
        return path
    return os.path.join(workflow.basedir, path)


def model_dir(name):
    """Folder a configured model is materialised in."""
    return f"{RESULTS}/models/{name}"


def slug(text):
    """A path-safe name for a model id, URL or file path."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", os.path.basename(str(text).rstrip(os.sep))).strip("-") or "model"


def llm_name():
    """Path component naming the generating model: its config name (local) or endpoint model (openai)."""
    llm = config["llm"]
    return llm["model"] if llm["backend"] == "local" else f"openai-{slug(llm['openai']['model'])}"


def llm_model_inputs():
    """The materialised model folder a local-backend rule needs (none for an endpoint)."""
    llm = config["llm"]
    if llm["backend"] == "local" and llm["model"] in MODELS:
        return [model_dir(llm["model"])]
    return []


def llm_params():
    """The config sections a generating rule depends on (a change reruns it)."""
    return dict(llm=config["llm"], sampling=config["sampling"])


def smoke_dir():
    return f"{RESULTS}/smoke/{llm_name()}"


def model_input(name):
    """A configured model's materialised folder, or the path itself."""
    return model_dir(name) if name in MODELS else name


def organism_base_input():
    return model_input(config["organisms"]["base_model"])


def organism_recipe(name):
    """The shared recipe with the organism's own overrides."""
    return {**config["organisms"]["recipe"], **ORGANISMS[name].get("recipe", {})}


def organism_targets():
    targets = []
    for name in config["organisms"]["build"]:
        if name not in ORGANISMS:
            sys.exit(f"difflab: config: organisms.build names '{name}', which is not in organisms.definitions")
        targets.append(f"{RESULTS}/organisms/{name}")
        if ORGANISMS[name]["probes"] and not ORGANISMS[name]["control"]:
            targets.append(f"{RESULTS}/organisms/{name}.probes.json")
    return targets


# ---- diffmining paths. They carry the model pair, the extraction (method and layer), the data setting
# (samples, tokens per sample, seed), top-K, the vocabulary limit and NMF's model (topics, beta,
# orthogonality, mode), so that runs differing in these sit side by side. The other settings are the
# jobs' params - a dataset's file and position slice, dtype, device, batch size, the patchscope identity prompt,
# how tokens are shown, NMF's stopping rule: changing one reruns the jobs it feeds in place (Snakemake's
# params rerun trigger) and replaces their files.
DIFFMINING = config["diffmining"]


def any_model_input(name):
    """Folder of a configured model or organism; pairs name nothing else (difflab.config checks)."""
    return model_dir(name) if name in MODELS else f"{RESULTS}/organisms/{name}"


def extraction_id(method):
    """direct | logit_lens_l0.75 | patchscope_l0.75 (the layer is part of the name)."""
    return method if method == "direct" else f"{method}_l{DIFFMINING['extraction']['layer']}"


EXTRACTIONS = {extraction_id(m): m for m in DIFFMINING["extraction"]["methods"]}
# The extraction settings each method reads: a job's params hold only those, so that adding a method or
# changing another method's setting (the layer, for `direct`) reruns nothing that is already built.
EXTRACTION_KEYS = ("batch_size", "device", "dtype", "vocab_size_limit")
METHOD_KEYS = {"direct": (), "logit_lens": ("layer",), "patchscope": ("layer", "identity_prompt")}


def extraction_params(wildcards):
    method = EXTRACTIONS[wildcards.extraction]
    section = DIFFMINING["extraction"]
    return {key: section[key] for key in EXTRACTION_KEYS + METHOD_KEYS[method]}


def data_setting():
    d = DIFFMINING
    return f"n{d['n_samples']}_t{d['max_tokens_per_sample']}_seed{d['seed']}"


def run_setting():
    limit = DIFFMINING["extraction"]["vocab_size_limit"]
    return f"{data_setting()}_top{DIFFMINING['top_k']}" + (f"_vocab{limit}" if limit else "")


def ordering_id(kind):
    """Folder of an ordering type; NMF's carries its own parameters."""
    if kind != "nmf":
        return kind
    n = DIFFMINING["nmf"]
    return f"nmf_topics{n['n_topics']}_beta{n['beta']}_orth{n['orthogonal_weight']}_{n['mode']}"


ORDERINGS = {ordering_id(kind): kind for kind in DIFFMINING["orderings"]}


def nmf_params(wildcards):
    """NMF's settings and seed for an NMF ordering job, nothing for the others (a change reruns NMF only)."""
    return {**DIFFMINING["nmf"], "seed": DIFFMINING["seed"]} if ORDERINGS[wildcards.ordering] == "nmf" else {}


def diffmining_run_dir(base, finetuned, extraction):
    return f"{RESULTS}/diffmining/{base}/{finetuned}/{extraction}/{run_setting()}"


def pair_description(base, finetuned):
    """What the pair's finetune is known to be about: the pair's own text, else the organism's."""
    for pair in DIFFMINING["pairs"]:
        if pair["base"] == base and pair["finetuned"] == finetuned and pair.get("description"):
            return pair["description"]
    return ORGANISMS.get(finetuned, {}).get("description", "")


def diffmining_run_targets(base, finetuned, extraction):
    run = diffmining_run_dir(base, finetuned, extraction)
    targets = [f"{run}/run_metadata.json", f"{run}/overview.json"]
    for dataset in DIFFMINING["datasets"]:
        targets += [f"{run}/plots/{dataset}_occurrence.png"]
        for ordering in ORDERINGS:
            targets.append(f"{run}/{ordering}/{dataset}/orderings.json")
            if DIFFMINING["relevance"]["enabled"]:  # every graded pair has a description (difflab.config checks)
                targets.append(f"{run}/{ordering}/{dataset}/eval.json")
    if DIFFMINING["ask"]["enabled"]:
        targets.append(f"{run}/answer.json")
    return targets


def diffmining_targets():
    targets = []
    for pair in DIFFMINING["pairs"]:
        for extraction in EXTRACTIONS:
            targets += diffmining_run_targets(pair["base"], pair["finetuned"], extraction)
    return targets


# ---- diffmining rule helpers (rules/diffmining.smk)
RUN = f"{RESULTS}/diffmining/{{base}}/{{finetuned}}/{{extraction}}/{{setting}}"
DATA = f"{RESULTS}/diffmining/data/{{base}}/{{dsetting}}/{{dataset}}.safetensors"


def alternatives(names):
    """A wildcard regex matching exactly these names."""
    return "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True)) or "(?!)"


def diffmining_dataset(wildcards):
    return DIFFMINING["datasets"][wildcards.dataset]


def diffmining_tokens(wildcards):
    return DATA.format(base=wildcards.base, dsetting=data_setting(), dataset=wildcards.dataset)


def diffmining_reduce_inputs(wildcards):
    inputs = {"base": any_model_input(wildcards.base), "finetuned": any_model_input(wildcards.finetuned),
              "tokens": diffmining_tokens(wildcards)}
    if not DIFFMINING["extraction"]["in_memory"]:
        run = RUN.format(**wildcards)
        inputs["base_logits"] = f"{run}/logits/base/{wildcards.dataset}.safetensors"
        inputs["finetuned_logits"] = f"{run}/logits/finetuned/{wildcards.dataset}.safetensors"
    return inputs


def diffmining_reduce_outputs():
    outputs = {"reductions": f"{RUN}/{{dataset}}.reductions.safetensors",
               "stats": f"{RUN}/{{dataset}}_global_token_stats.json"}
    if DIFFMINING["sequence_likelihood_ratios"]:
        outputs["ratios"] = f"{RUN}/{{dataset}}_sequence_likelihood_ratios.json"
    return outputs


def diffmining_ordering_groups():
    """(ordering folder, dataset) of every orderings.json of a run, in a fixed order."""
    return [(ordering, dataset) for dataset in DIFFMINING["datasets"] for ordering in ORDERINGS]


def diffmining_orderings_inputs(wildcards):
    run = RUN.format(**wildcards)
    return [f"{run}/{ordering}/{dataset}/orderings.json" for ordering, dataset in diffmining_ordering_groups()]



# ---- scoreboard: every diffing method scored on every organism (rules/organisms.smk)
SCOREBOARD = config["scoreboard"]


def scoreboard_organisms():
    names = SCOREBOARD["organisms"] or [n for n in config["organisms"]["build"] if not ORGANISMS[n]["control"]]
    for name in names:
        if name not in ORGANISMS:
            sys.exit(f"difflab: config: scoreboard.organisms names '{name}', which is not in organisms.definitions")
    return names


def scoreboard_comparisons():
    """Comparison name -> the model each organism is diffed against."""
    comparisons = {"base": config["organisms"]["base_model"]}
    control = SCOREBOARD["control"]
    if control:
        if control not in ORGANISMS:
            sys.exit(f"difflab: config: scoreboard.control names '{control}', which is not in organisms.definitions")
        comparisons["control"] = control
    return comparisons


def scoreboard_inputs():
    """{method: {comparison: {organism: [orderings.json per dataset]}}}, method = extraction/ordering."""
    inputs = {}
    if not SCOREBOARD["enabled"]:
        return inputs
    for extraction in EXTRACTIONS:
        for ordering, kind in ORDERINGS.items():
            method = inputs.setdefault(f"{extraction}/{kind}", {})
            for comparison, base in scoreboard_comparisons().items():
                method[comparison] = {
                    organism: [f"{diffmining_run_dir(base, organism, extraction)}/{ordering}/{dataset}/orderings.json"
                               for dataset in DIFFMINING["datasets"]]
                    for organism in scoreboard_organisms()}
    if SCOREBOARD["active"]:  # active sampling's validated hypotheses, organism vs base (rules/active.smk)
        base = config["organisms"]["base_model"]
        inputs["active/validated_hypotheses"] = {"base": {
            organism: [f"{RESULTS}/active/{base}/{organism}/active/{active_setting('active')}/hypotheses.json"]
            for organism in scoreboard_organisms()}}
    return inputs


def scoreboard_files():
    return sorted({path for comps in scoreboard_inputs().values() for orgs in comps.values()
                   for paths in orgs.values() for path in paths})


def scoreboard_evals():
    """With the scoreboard's LLM judge and diffmining's relevance grading both on: the grading's eval.json
    next to every scored orderings file. Built first, their answers are the judge's cache hits for each
    organism's own topic (both ask difflab.llm.relevance's question), so nothing is asked twice."""
    if not (SCOREBOARD["judge"]["enabled"] and DIFFMINING["relevance"]["enabled"]):
        return []
    return [os.path.join(os.path.dirname(path), "eval.json") for path in scoreboard_files()
            if os.path.basename(path) == "orderings.json"]


def scoreboard_targets():
    if not (SCOREBOARD["enabled"] and scoreboard_organisms() and EXTRACTIONS and ORDERINGS and DIFFMINING["datasets"]):
        return []
    return [f"{RESULTS}/scoreboard/scoreboard.json"]


# ---- traces: diverse, high-value traces from program search trees (rules/traces.smk)
TRACES = config["traces"]
TRACE_SETTINGS = ("discount", "aggregate", "value", "encoder", "encoder_options", "fields", "pooling", "metric",
                  "n_clusters", "k_min", "k_max", "silhouette_sample", "minibatch_above", "per_cluster", "sampling",
                  "min_quantile", "temperature", "seed")
TRACES_DIR = f"{RESULTS}/traces/{{run}}"


def traces_run(run):
    """A run's database, version and settings (the shared settings with the run's overrides)."""
    if run not in TRACES["runs"]:
        sys.exit(f"difflab: config: traces run '{run}' is not in traces.runs")
    spec = TRACES["runs"][run]
    if not spec.get("database") and not spec.get("import"):
        sys.exit(f"difflab: config: traces.runs.{run} needs a database or an import")
    settings = {key: spec.get(key, TRACES[key]) for key in TRACE_SETTINGS}
    return {"database": spec.get("database", ""), "import": spec.get("import", ""),
            "version": spec.get("version"), **settings}


def traces_database(run):
    """The database URL or file a run reads (its embedded SQLite file when it imports a dump)."""
    traces_run(run)  # checks the run
    return difflab_traces.run_database(config, run)


def traces_database_input(wildcards):
    """A file the read depends on: the embedded database, or an SQLite file; nothing for a server."""
    url = traces_database(wildcards.run)
    return [] if url.startswith(("postgresql://", "postgres://")) else [str(difflab_traces_db.sqlite_path(url))]


def traces_fingerprint(wildcards):
    """For a server database: rows, max id and value/visit sums now (a change reruns the read)."""
    url = traces_database(wildcards.run)
    if not url.startswith(("postgresql://", "postgres://")):
        return None
    try:
        return difflab_traces_db.fingerprint(url, traces_run(wildcards.run)["version"], **TRACES["db"])
    except (DifflabError, OSError) as exc:
        sys.exit(f"difflab: traces run '{wildcards.run}': cannot read {difflab_traces_db.redact(url)}: {exc}")


def traces_encoder_id(run):
    return difflab_traces.encoder_id(traces_run(run)["encoder"])


def traces_encoder_spec(wildcards):
    """The encoder a features file names: the run's own (with its options), or another registered one."""
    spec = traces_run(wildcards.run)
    if wildcards.encoder == traces_encoder_id(wildcards.run):
        return {"encoder": spec["encoder"], "encoder_options": spec["encoder_options"]}
    if wildcards.encoder in ("ngram", "dense"):
        return {"encoder": wildcards.encoder, "encoder_options": {}}
    sys.exit(f"difflab: traces run '{wildcards.run}' has no encoder '{wildcards.encoder}'")


def traces_features(wildcards):
    return f"{RESULTS}/traces/{wildcards.run}/features/{traces_encoder_id(wildcards.run)}.safetensors"


def traces_targets():
    return [f"{RESULTS}/traces/{run}/{name}" for run in TRACES["build"]
            for name in ("selected_traces.jsonl", "summary.json")]


# ---- datagen: synthetic instruction data (rules/datagen.smk)
DATAGEN = config["datagen"]
DATAGEN_DIR = f"{RESULTS}/datagen/{{recipe}}"
DATAGEN_PANELS = ("lengths", "topics", "readability", "diversity", "perplexity")


def datagen_generation_settings(recipe):
    """What generation depends on: the recipe without its filter, metrics and export settings."""
    spec = DATAGEN["recipes"][recipe]
    return {k: v for k, v in spec.items() if k not in ("filter", "metrics", "n_topics", "export")}


def datagen_perplexity_model():
    """The local model perplexity is measured with: the LLM's when local, else the default model."""
    llm = config["llm"]
    return llm["model"] if llm["backend"] == "local" else config["default_model"]


def datagen_perplexity_model_input(wildcards):
    if "perplexity" not in DATAGEN["recipes"][wildcards.recipe]["metrics"]:
        return []
    return [model_input(datagen_perplexity_model())]


def datagen_targets():
    return [f"{RESULTS}/datagen/{recipe}/{name}" for recipe in DATAGEN["build"]
            for name in ("dashboard.png", "train.jsonl", "validation.jsonl")]


# ---- active sampling (rules/active.smk): one folder per pair, mode and generation setting
ACTIVE = config["active"]
ACTIVE_PAIR = f"{RESULTS}/active/{{base}}/{{finetuned}}"
ACTIVE_RUN = f"{ACTIVE_PAIR}/{{mode}}/{{asetting}}"


def active_setting(mode):
    """The parameters that change an iteration's texts, in its folder name."""
    a, s = ACTIVE, ACTIVE["sampling"]
    n = f"n{a['exhaustive_samples']}" if mode == "exhaustive" else f"n{a['initial_samples']}_s{a['samples_per_iteration']}"
    return f"k{a['n_clusters']}_{n}_t{s['max_new_tokens']}_temp{s['temperature']}_seed{a['seed']}"


def active_generation_section():
    """What an iteration's texts depend on (not the budget: a larger one only adds iterations)."""
    keys = ("prompts", "categories", "topics", "initial_samples", "exhaustive_samples", "samples_per_iteration",
            "prefix_words", "seed", "sampling")
    return {k: ACTIVE[k] for k in keys}


def active_sampling_id():
    s = ACTIVE["sampling"]
    return f"t{s['max_new_tokens']}_temp{s['temperature']}_seed{ACTIVE['seed']}"


def active_final_iteration(wildcards):
    """Walk the iterations' checkpoints until `decide` (on the current config) says stop."""
    iteration = 0
    while True:
        state = checkpoints.active_cluster.get(**wildcards, iteration=iteration).output.state
        go_on, _ = difflab_active_iterations.decide(difflab_io.read_json(state), ACTIVE)
        if not go_on:
            return iteration
        iteration += 1


def active_iteration_files(wildcards, name, upto=None):
    last = active_final_iteration(wildcards) if upto is None else upto
    return [f"{RESULTS}/active/{wildcards.base}/{wildcards.finetuned}/{wildcards.mode}/{wildcards.asetting}/iter{i}/{name}"
            for i in range(last + 1)]


def active_previous(name):
    """Iteration i-1's file `name` (or every earlier iteration's texts) for iteration i's rules."""
    def files(wildcards):
        i = int(wildcards.iteration)
        if i == 0:
            return []
        run = f"{RESULTS}/active/{wildcards.base}/{wildcards.finetuned}/{wildcards.mode}/{wildcards.asetting}"
        if name == "texts":
            return [f"{run}/iter{j}/texts.jsonl" for j in range(i)]
        return [f"{run}/iter{i - 1}/{name}"]
    return files


def active_targets():
    if not ACTIVE["build"]:
        return []
    targets = []
    for pair in ACTIVE["pairs"]:
        for mode in ACTIVE["modes"]:
            targets.append(f"{RESULTS}/active/{pair['base']}/{pair['finetuned']}/{mode}/{active_setting(mode)}/report.json")
    return targets


LIBGEN = config["libgen"]
LIBGEN_DIR = f"{RESULTS}/libgen/{{experiment}}"


def libgen_all_settings(wildcards):
    """The experiment's settings (libgen.settings with its overrides)."""
    try:
        return difflab_libgen_settings.experiment_settings(LIBGEN, wildcards.experiment)
    except DifflabError as exc:
        sys.exit(f"difflab: {exc}")


LIBGEN_STAGE_KEYS = {
    "foundation": ["check_references", "workers", "sandbox"],
    "discover": ["train_split", "train_limit", "batch_size", "meta_batch_size", "max_functions", "max_new_tokens",
                 "temperature", "seed"],
    "refine": ["train_split", "train_limit", "refinement_iterations", "refinement_sample_size", "max_new_tokens",
               "temperature", "seed"],
    "implement": ["max_repairs", "max_new_tokens", "temperature", "seed", "sandbox"],
    "document": ["max_new_tokens", "temperature", "seed"],
    "validate": ["validation_split", "validation_limit", "score", "workers", "max_new_tokens", "temperature", "seed",
                 "sandbox"],
    "extend": ["validation_split", "validation_limit", "score", "workers", "max_new_tokens", "temperature", "seed",
               "sandbox", "max_repairs", "extension_clusters"],
}


def libgen_settings(stage):
    """The settings one stage reads, so changing another stage's setting does not rerun it (the
    report gets all of them; whether a cycle follows is decided on the whole, current config)."""
    def settings(wildcards):
        merged = libgen_all_settings(wildcards)
        return {k: merged[k] for k in LIBGEN_STAGE_KEYS[stage]} if stage in LIBGEN_STAGE_KEYS else merged
    return settings


def libgen_domain(wildcards):
    return repo_path(LIBGEN["experiments"][wildcards.experiment]["domain"])


def libgen_domain_files(wildcards):
    """Every file of the domain folder, so an edited task or foundation reruns stage 0 and what follows."""
    root = libgen_domain(wildcards)
    if not os.path.isfile(os.path.join(root, "domain.yaml")):
        sys.exit(f"difflab: libgen.experiments.{wildcards.experiment}.domain: {root} has no domain.yaml")
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        files += [os.path.join(folder, n) for n in sorted(names) if not n.endswith(".pyc")]
    return files


def libgen_previous(name):
    """Cycle n's inputs from cycle n-1 (stage 5 and the stage-3 library for cycle 1)."""
    def files(wildcards):
        n = int(wildcards.cycle)
        root = f"{RESULTS}/libgen/{wildcards.experiment}"
        if n <= 1:
            return f"{root}/stage3/generated_lib" if name == "library" else f"{root}/stage5/{name}"
        return f"{root}/stage6/cycle{n - 1}/{name}"
    return files


def libgen_cycle_states(wildcards):
    """Every extension cycle's state, walking the checkpoints until `decide` (current config) says stop."""
    settings = libgen_all_settings(wildcards)
    state = checkpoints.libgen_validate.get(**wildcards).output.state
    states = []
    while difflab_libgen_settings.decide(difflab_io.read_json(state), settings)[0]:
        n = len(states) + 1
        state = checkpoints.libgen_extend.get(**wildcards, cycle=n).output.state
        states.append(state)
    return states


def libgen_targets():
    if not LIBGEN["build"]:
        return []
    return [f"{RESULTS}/libgen/{name}/report/libgen_report.json" for name in LIBGEN["experiments"]]


def default_targets():
    return ([model_dir(name) for name in MODELS] + [f"{smoke_dir()}/summary.json"] + organism_targets()
            + diffmining_targets() + scoreboard_targets() + traces_targets() + datagen_targets() + active_targets() + libgen_targets())


onsuccess:
    difflab_workflow.print_summary(default_targets(), f"{smoke_dir()}/summary.md")

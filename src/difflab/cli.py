"""`difflab`: the command-line entry point, a subcommand per capability.

The rules' scripts and these subcommands call the same library functions. Bad input ends with a
one-line `difflab: error: ...` message and exit status 2, never a traceback.

    difflab config check [--configfile F]          validate a config (defaults filled)
    difflab models list|convert NAME|info NAME       configured models; materialise one; its facts
    difflab generate PROMPTS OUT [--samples N]       chat prompts (JSONL) -> answers (JSONL) via difflab.llm
    difflab embed SENTENCES OUT                      one sentence per line -> safetensors
    difflab traces migrate DATABASE                  create the `programs` table (PostgreSQL URL or SQLite file)
    difflab traces import DUMP DATABASE              upsert a JSONL dump of programs
    difflab traces synth N OUT                       a synthetic search tree of N programs (JSONL dump)
    difflab traces select DATABASE OUT_DIR           every traces stage, as the workflow runs them, into OUT_DIR
    difflab datagen generate|evolve|template|augment|filter|metrics|export|tune ...  synthetic instruction data
                                                     (`difflab datagen --help`; exit 3 when nothing is left)
    difflab libgen run --experiment E [--stage S]    a libgen stage (0-6, baseline, report, all) through Snakemake
    difflab libgen targets --experiment E            the file each libgen stage builds
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from difflab import config as config_mod
from difflab.errors import DifflabError


def _config(args) -> dict:
    overrides = {}
    for item in getattr(args, "set", None) or []:
        if "=" not in item:
            raise DifflabError(f"--set expects key=value, got '{item}'")
        key, value = item.split("=", 1)
        node = overrides
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = json.loads(value) if value[:1] in "[{0123456789-tfn\"" and _is_json(value) else value
    return config_mod.load(args.configfile, overrides)


def _is_json(value: str) -> bool:
    try:
        json.loads(value)
        return True
    except ValueError:
        return False


def cmd_config_check(args) -> None:
    cfg = _config(args)
    print(f"config ok: {len(cfg['models'])} model(s), llm backend {cfg['llm']['backend']}")


def cmd_models_list(args) -> None:
    cfg = _config(args)
    from difflab.models import models_dir

    for name, spec in cfg["models"].items():
        built = (models_dir(cfg) / name).is_dir()
        print(f"{name}\t{spec['source']}\t{'built' if built else 'not built'}\t{models_dir(cfg) / name}")


def cmd_models_convert(args) -> None:
    cfg = _config(args)
    from difflab import models

    if args.name not in cfg["models"]:
        raise DifflabError(f"unknown model '{args.name}' (configured: {', '.join(cfg['models']) or 'none'})")
    meta = models.materialize(args.name, cfg["models"][args.name], models.models_dir(cfg) / args.name)
    print(json.dumps(meta, indent=2))


def cmd_models_info(args) -> None:
    cfg = _config(args)
    from difflab import models

    loaded = models.load(args.name, cfg)
    print(json.dumps({"name": loaded.name, "path": str(loaded.path), "device": loaded.device, "dtype": loaded.dtype,
                      "fingerprint": loaded.fingerprint,
                      "parameters": sum(p.numel() for p in loaded.model.parameters())}, indent=2))


def cmd_generate(args) -> None:
    cfg = _config(args)
    from difflab import smoke

    cfg["smoke"]["samples_per_prompt"] = args.samples
    usage = args.usage or str(Path(args.out).with_suffix("")) + "_usage.json"
    records = smoke.generate(cfg, args.prompts, args.out, usage)
    print(f"wrote {len(records)} answers to {args.out} (usage: {usage})")


def cmd_embed(args) -> None:
    cfg = _config(args)
    from difflab import embed, io

    sentences = io.read_lines(args.sentences)
    section = cfg["embedding"]
    vectors = embed.embed(sentences, section["model"], batch_size=section["batch_size"],
                          normalize=section["normalize"], progress=True)
    io.write_safetensors(args.out, {"embeddings": vectors}, metadata={"model": section["model"]})
    print(f"wrote {tuple(vectors.shape)} embeddings to {args.out}")


def cmd_traces_migrate(args) -> None:
    from difflab.traces import db

    db.migrate(args.database)
    print(f"programs table ready in {db.redact(args.database)}")


def cmd_traces_import(args) -> None:
    from difflab.traces import db

    report = db.import_dump(args.database, args.dump, batch_size=args.batch_size)
    print(f"imported {report['imported']} programs into {report['database']} ({report['table']['rows']} in the table)")


def cmd_traces_synth(args) -> None:
    from difflab.traces import synth

    records = synth.generate_tree(args.n, n_families=args.families, seed=args.seed, version=args.version)
    synth.write_jsonl(records, args.out, with_family=not args.no_family)
    print(f"wrote {len(records)} programs in {args.families} families to {args.out}")


def cmd_traces_select(args) -> None:
    from difflab.traces import encoder_id, stages

    cfg = _config(args)["traces"]
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stages.snapshot_programs(args.database, out / "programs.parquet", version=args.version, db_options=cfg["db"])
    report = stages.extract(out / "programs.parquet", out / "traces.parquet", out / "tree_report.json")
    stages.backprop(out / "programs.parquet", out / "traces.parquet", out / "node_values.parquet",
                    out / "trace_values.parquet", discount=cfg["discount"], aggregate=cfg["aggregate"])
    features = out / "features" / f"{encoder_id(cfg['encoder'])}.safetensors"
    stages.encode_stage(out / "programs.parquet", out / "traces.parquet", features, encoder=cfg["encoder"],
                        encoder_options=cfg["encoder_options"], fields=cfg["fields"], pooling=cfg["pooling"],
                        discount=cfg["discount"])
    stages.cluster_stage(features, out / "traces.parquet", out / "trace_values.parquet",
                         out / "clustered_traces.parquet", out / "clusters.json",
                         **{k: cfg[k] for k in ("value", "metric", "n_clusters", "k_min", "k_max",
                                                "silhouette_sample", "minibatch_above", "seed")})
    summary = stages.select_stage(out / "clustered_traces.parquet", out / "programs.parquet", out / "node_values.parquet",
                                  out / "clusters.json", out / "selected_traces.jsonl", out / "summary.json",
                                  out / "traces.png", per_cluster=cfg["per_cluster"], strategy=cfg["sampling"],
                                  temperature=cfg["temperature"], seed=cfg["seed"], run=args.version or "all",
                                  min_quantile=cfg["min_quantile"])
    print(f"{report['traces']} traces, {summary['clusters']} clusters, {summary['selected']} selected -> "
          f"{out / 'selected_traces.jsonl'}")


EXIT_EMPTY = 3


def _recipe(cfg: dict, name: str) -> dict:
    recipes = cfg["datagen"]["recipes"]
    if name not in recipes:
        raise DifflabError(f"datagen: no recipe '{name}' in the config (recipes: {', '.join(recipes) or 'none'})")
    return recipes[name]


def _generator(args):
    from difflab.datagen.generator import Generator
    from difflab.llm import client_from_config

    cfg = _config(args)
    generation = dict(_recipe(cfg, args.recipe)["generation"])
    for key in ("temperature", "top_p", "max_new_tokens", "seed"):
        if getattr(args, key, None) is not None:
            generation[key] = getattr(args, key)
    return Generator(client_from_config(cfg), generation), cfg


def _finish(results, out, generator=None) -> int:
    from difflab import io

    results.save(out)
    if generator is not None and generator.reports:
        io.write_json(Path(str(out) + ".report.json"), generator.reports)
    print(f"wrote {len(results)} examples to {out}")
    if not len(results):
        print("difflab: warning: no examples", file=sys.stderr)
        return EXIT_EMPTY
    return 0


def cmd_datagen_generate(args) -> int:
    from difflab.datagen.records import Results

    gen, _ = _generator(args)
    return _finish(gen.generate_from_seed(Results.load(args.seeds), args.count), args.out, gen)


def cmd_datagen_evolve(args) -> int:
    from difflab.datagen.records import Results

    gen, _ = _generator(args)
    ops = tuple(args.operators.split(",")) if args.operators else None
    return _finish(gen.evolve_instructions(Results.load(args.examples), args.rounds, ops), args.out, gen)


def cmd_datagen_template(args) -> int:
    variables = {}
    for item in args.var:
        if "=" not in item:
            raise DifflabError(f"--var expects name=value1,value2, got '{item}'")
        name, values = item.split("=", 1)
        variables[name] = [v.strip() for v in values.split(",") if v.strip()]
    gen, _ = _generator(args)
    return _finish(gen.generate_from_template(args.template, variables, mode=args.mode, n=args.n,
                                              answer=not args.no_answer), args.out, gen)


def cmd_datagen_augment(args) -> int:
    from difflab.datagen.records import Results

    gen, _ = _generator(args)
    base = Results.load(args.examples)
    out = Results()
    if args.paraphrases:
        out += gen.augment_by_paraphrasing(base, args.paraphrases)
    if args.styles:
        out += gen.augment_with_style_variation(base, args.styles.split(","))
    if args.domains:
        out += gen.augment_with_domain_transfer(base, args.domains.split(","))
    return _finish(out, args.out, gen)


def cmd_datagen_filter(args) -> int:
    from difflab.datagen import stages

    cfg = _config(args)
    recipe = _recipe(cfg, args.recipe)
    kept = stages.filter_stage(args.examples, args.out, args.report or str(args.out) + ".report.json",
                               filter_section=recipe["filter"], privacy_section=recipe["privacy"])
    print(f"kept {len(kept)} examples -> {args.out}")
    return 0 if len(kept) else EXIT_EMPTY


def cmd_datagen_metrics(args) -> int:
    from difflab.datagen import stages

    cfg = _config(args)
    names = args.metrics.split(",") if args.metrics else _recipe(cfg, args.recipe)["metrics"]
    report = stages.metrics_stage(args.examples, args.out, names=names, perplexity_model=args.perplexity_model,
                                  embedding_model=cfg["embedding"]["model"], n_topics=args.topics, seed=0)
    if args.dashboard:
        stages.dashboard_stage(args.examples, args.out, args.dashboard, title=f"datagen: {args.examples}")
    print(json.dumps({k: v for k, v in report.items() if k in ("examples", "distinct", "self_bleu", "skipped")}))
    return 0


def cmd_datagen_export(args) -> int:
    from difflab.datagen import stages

    n_train, n_val = stages.export_stage(args.examples, args.train, args.validation, fmt=args.format,
                                         validation_fraction=args.validation_fraction, seed=args.seed,
                                         system=args.system)
    print(f"wrote {n_train} training and {n_val} validation examples ({args.format})")
    return 0 if n_train + n_val else EXIT_EMPTY


def cmd_datagen_tune(args) -> int:
    from difflab.datagen import rl
    from difflab.llm import client_from_config

    cfg = _config(args)
    client = client_from_config(cfg)
    task = rl.ClassificationTask(args.heldout, per_label=args.per_label, seed=args.seed)
    space = rl.ParamSpace()
    agent = rl.ReinforceAgent(space, seed=args.seed, batch=args.batch) if args.agent == "reinforce" else \
        rl.RandomSearchAgent(space, seed=args.seed)
    tuner = rl.RLTuner(lambda params: task.reward(client, params), agent, args.history)
    best = tuner.run(args.budget)
    print(json.dumps({"agent": args.agent, "evaluations": len(tuner.history), "best": best}))
    return 0


def _datagen_parser(sub, common) -> None:
    dg = sub.add_parser(
        "datagen", help="synthetic instruction data: generate, evolve, template, augment, filter, metrics, export",
        description="Synthetic instruction data through the configured LLM (cached, retried, accounted). Files "
                    "are JSONL (or Parquet by the .parquet suffix) of {instruction, input, output, method, parent, "
                    "params, meta}. Exit status: 0 done, 2 bad input, 3 nothing left to write.",
        epilog="example: difflab datagen generate resources/datagen/seeds.jsonl grown.jsonl --count 20 && "
               "difflab datagen filter grown.jsonl clean.jsonl && difflab datagen export clean.jsonl train.jsonl val.jsonl")
    act = dg.add_subparsers(dest="action", required=True)
    gen_opts = argparse.ArgumentParser(add_help=False)
    gen_opts.add_argument("--recipe", default="small", help="recipe whose generation settings apply (default: small)")
    gen_opts.add_argument("--temperature", type=float)
    gen_opts.add_argument("--top-p", dest="top_p", type=float)
    gen_opts.add_argument("--max-new-tokens", dest="max_new_tokens", type=int)
    gen_opts.add_argument("--seed", type=int)

    p = act.add_parser("generate", parents=[common, gen_opts], help="self-instruct: grow new instructions from seeds")
    p.add_argument("seeds", help="JSONL of seed examples (instruction, optional input/output)")
    p.add_argument("out")
    p.add_argument("--count", type=int, default=10, help="new instructions wanted")
    p.set_defaults(func=cmd_datagen_generate)
    p = act.add_parser("evolve", parents=[common, gen_opts], help="evol-instruct: make instructions harder or new")
    p.add_argument("examples")
    p.add_argument("out")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--operators", help="comma list of add_constraints, deepen, concretize, increase_reasoning, breadth")
    p.set_defaults(func=cmd_datagen_evolve)
    p = act.add_parser("template", parents=[common, gen_opts], help="instructions from a template and variable values")
    p.add_argument("template", help="e.g. 'Explain {topic} to a {audience}.'")
    p.add_argument("out")
    p.add_argument("--var", action="append", default=[], metavar="NAME=V1,V2", help="values of one variable")
    p.add_argument("--mode", choices=["product", "sample"], default="product")
    p.add_argument("-n", type=int, help="how many combinations")
    p.add_argument("--no-answer", action="store_true", help="only the instructions")
    p.set_defaults(func=cmd_datagen_template)
    p = act.add_parser("augment", parents=[common, gen_opts], help="paraphrases, answer styles, domain transfer")
    p.add_argument("examples")
    p.add_argument("out")
    p.add_argument("--paraphrases", type=int, default=0, help="paraphrases per instruction")
    p.add_argument("--styles", help="comma list, e.g. formal,casual")
    p.add_argument("--domains", help="comma list, e.g. medicine,law")
    p.set_defaults(func=cmd_datagen_augment)
    p = act.add_parser("filter", parents=[common], help="PII redaction + length, duplicate and near-duplicate filters")
    p.add_argument("examples")
    p.add_argument("out")
    p.add_argument("--recipe", default="small", help="recipe whose filter and privacy settings apply")
    p.add_argument("--report", help="where the filter report goes (default: OUT.report.json)")
    p.set_defaults(func=cmd_datagen_filter)
    p = act.add_parser("metrics", parents=[common], help="diversity, readability, topics, perplexity, lengths")
    p.add_argument("examples")
    p.add_argument("out", help="metrics JSON")
    p.add_argument("--recipe", default="small", help="recipe whose metric list applies")
    p.add_argument("--metrics", help="comma list (default: the recipe's)")
    p.add_argument("--perplexity-model", help="local model folder or configured name for perplexity")
    p.add_argument("--topics", type=int, default=4)
    p.add_argument("--dashboard", help="also draw the one-page dashboard PNG here")
    p.set_defaults(func=cmd_datagen_metrics)
    p = act.add_parser("export", parents=[common], help="train/validation files for finetuning tools")
    p.add_argument("examples")
    p.add_argument("train")
    p.add_argument("validation")
    p.add_argument("--format", choices=["messages", "alpaca"], default="messages")
    p.add_argument("--validation-fraction", type=float, default=0.1)
    p.add_argument("--system", help="system message (messages format)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_datagen_export)
    p = act.add_parser("tune", parents=[common],
                       help="search temperature, top_p and method for a target task (random search or REINFORCE)")
    p.add_argument("history", help="JSON history; an existing one is resumed")
    p.add_argument("--agent", choices=["random", "reinforce"], default="reinforce")
    p.add_argument("--budget", type=int, default=12, help="evaluations in all (including a resumed history's)")
    p.add_argument("--heldout", default="resources/datagen/rl_heldout.jsonl",
                   help="labelled held-out set (JSONL text, label) the classifier is scored on")
    p.add_argument("--per-label", dest="per_label", type=int, default=6, help="generated sentences per label")
    p.add_argument("--batch", type=int, default=4, help="episodes per REINFORCE update")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_datagen_tune)


LIBGEN_TARGETS = {"0": "stage0/stage0_summary.json", "1": "stage1/api_proposal_v1.md",
                  "2": "stage2/api_proposal_final.md", "3": "stage3/stage3_summary.json",
                  "4": "stage4/system_prompt.txt", "5": "stage5/validation_report.json",
                  "baseline": "baseline/validation_report.json", "6": "stage6/extension_report.json",
                  "report": "report/libgen_report.json", "all": "report/libgen_report.json"}


def _libgen_targets(args) -> dict:
    from difflab.libgen.settings import experiment_settings

    cfg = _config(args)
    experiment_settings(cfg["libgen"], args.experiment)  # the experiment exists and its settings are known
    root = Path(cfg["results_dir"]) / "libgen" / args.experiment
    return {stage: str(root / path) for stage, path in LIBGEN_TARGETS.items()}


def cmd_libgen_targets(args) -> None:
    for stage, path in _libgen_targets(args).items():
        print(f"{stage:9s} {path}")


def cmd_libgen_run(args) -> int:
    """The stage's file through Snakemake, so only what is stale is rebuilt (the same as requesting it)."""
    import subprocess

    target = _libgen_targets(args)[args.stage]
    cmd = [sys.executable, "-m", "snakemake", target, "--snakefile", str(config_mod.REPO_ROOT / "Snakefile"),
           "--cores", str(args.cores)]  # the target first: --configfile and --forcerun take several values
    if args.configfile:
        cmd += ["--configfile", args.configfile]
    if args.dry_run:
        cmd.append("--dry-run")
    if args.stage in ("6", "report", "all"):
        cmd += ["--forcerun", "libgen_report"]  # re-walk the extension cycles on the current config
    print("difflab: " + " ".join(cmd[2:]), file=sys.stderr)
    return subprocess.run(cmd).returncode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="difflab", description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--configfile", help="config YAML (default: config/config.yaml)")
    common.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. llm.backend=openai")
    sub = parser.add_subparsers(dest="command", required=True)

    cfg = sub.add_parser("config", help="configuration").add_subparsers(dest="action", required=True)
    cfg.add_parser("check", parents=[common], help="validate a config").set_defaults(func=cmd_config_check)

    mdl = sub.add_parser("models", help="models").add_subparsers(dest="action", required=True)
    mdl.add_parser("list", parents=[common], help="configured models").set_defaults(func=cmd_models_list)
    p = mdl.add_parser("convert", parents=[common], help="materialise a configured model")
    p.add_argument("name")
    p.set_defaults(func=cmd_models_convert)
    p = mdl.add_parser("info", parents=[common], help="load a model and print its facts")
    p.add_argument("name", help="configured name, model folder, or cached hub id")
    p.set_defaults(func=cmd_models_info)

    p = sub.add_parser("generate", parents=[common], help="answer chat prompts (JSONL with id, messages)")
    p.add_argument("prompts")
    p.add_argument("out")
    p.add_argument("--samples", type=int, default=1, help="answers per prompt")
    p.add_argument("--usage", help="where to write token/cost accounting (default: next to OUT)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("embed", parents=[common], help="embed sentences (one per line)")
    p.add_argument("sentences")
    p.add_argument("out")
    p.set_defaults(func=cmd_embed)

    trc = sub.add_parser("traces", help="diverse, high-value traces from program search trees").add_subparsers(
        dest="action", required=True)
    p = trc.add_parser("migrate", parents=[common], help="create the programs table if it is not there")
    p.add_argument("database", help="postgresql://user@host/db (password from PGPASSWORD) or an SQLite file")
    p.set_defaults(func=cmd_traces_migrate)
    p = trc.add_parser("import", parents=[common], help="upsert a JSONL dump of programs (id, code, parent_id, ...)")
    p.add_argument("dump")
    p.add_argument("database")
    p.add_argument("--batch-size", type=int, default=5000, help="rows per COPY/insert batch")
    p.set_defaults(func=cmd_traces_import)
    p = trc.add_parser("synth", parents=[common], help="write a synthetic search tree with planted families")
    p.add_argument("n", type=int, help="number of programs")
    p.add_argument("out", help="JSONL dump to write")
    p.add_argument("--families", type=int, default=20, help="roots, each an approach with near-duplicate refinements")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--version", help="version tag of the search run (default synthetic-SEED)")
    p.add_argument("--no-family", action="store_true", help="leave out the ground-truth family field")
    p.set_defaults(func=cmd_traces_synth)
    p = trc.add_parser("select", parents=[common],
                       help="read, extract, backpropagate, encode, cluster and select (settings: config's traces section)")
    p.add_argument("database")
    p.add_argument("out_dir")
    p.add_argument("--version", help="only this search run")
    p.set_defaults(func=cmd_traces_select)
    _datagen_parser(sub, common)
    lib = sub.add_parser("libgen", help="distil a library from a training set (hierarchical LLM summarization)")
    act = lib.add_subparsers(dest="action", required=True)
    p = act.add_parser("run", parents=[common], help="build a stage's file (and what it needs) through Snakemake")
    p.add_argument("--experiment", required=True, help="a name under libgen.experiments")
    p.add_argument("--stage", default="all", choices=list(LIBGEN_TARGETS), help="0-6, baseline, report or all")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--dry-run", action="store_true", help="show what would run")
    p.set_defaults(func=cmd_libgen_run)
    p = act.add_parser("targets", parents=[common], help="the file each stage builds")
    p.add_argument("--experiment", required=True)
    p.set_defaults(func=cmd_libgen_targets)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.func(args)
    except DifflabError as exc:
        print(f"difflab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("difflab: interrupted", file=sys.stderr)
        return 130
    return status or 0


if __name__ == "__main__":
    sys.exit(main())

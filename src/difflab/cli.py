"""`difflab`: the command-line entry point, a subcommand per capability.

The rules' scripts and these subcommands call the same library functions. Bad input ends with a
one-line `difflab: error: ...` message and exit status 2, never a traceback.

    difflab config check [--configfile F]          validate a config (defaults filled)
    difflab models list|convert NAME|info NAME       configured models; materialise one; its facts
    difflab generate PROMPTS OUT [--samples N]       chat prompts (JSONL) -> answers (JSONL) via difflab.llm
    difflab embed SENTENCES OUT                      one sentence per line -> safetensors
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except DifflabError as exc:
        print(f"difflab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("difflab: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

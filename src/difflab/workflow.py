"""Glue for the scripts that Snakemake rules run: log to the rule's log file, and turn a
DifflabError into one line (in the log and on stderr) and a failed job, without a traceback wall."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Callable

from difflab.errors import DifflabError


def prepare_environment(src_dir: str) -> None:
    """Environment every job inherits: the library importable, no hub access, quiet tokenizers."""
    paths = [src_dir] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != src_dir]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def rule_config(snakemake) -> dict:
    """The config sections a rule received as params; a local LLM points at its input model folder."""
    cfg = dict(snakemake.params.items())
    models = list(getattr(snakemake.input, "models", []) or [])
    if "llm" in cfg and cfg["llm"]["backend"] == "local" and models:
        cfg["llm"] = {**cfg["llm"], "model": models[0]}
    return cfg


class _Tee:
    """Write to the rule's log and to the terminal, so progress bars stay visible and logs complete."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self):
        for stream in self.streams:
            stream.flush()

    def isatty(self):
        return False


def run(snakemake, main: Callable[[], object]) -> None:
    """Run `main()` for a rule, with stdout/stderr going to its log file (when it has one)."""
    log_path = snakemake.log[0] if len(snakemake.log) else None
    stderr = sys.stderr
    stack = contextlib.ExitStack()
    if log_path:
        fh = stack.enter_context(open(log_path, "w", buffering=1))
        stack.enter_context(contextlib.redirect_stdout(fh))
        stack.enter_context(contextlib.redirect_stderr(_Tee(fh, stderr)))
        logging.basicConfig(stream=fh, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with stack:
        try:
            main()
        except DifflabError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(1)

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

    def close(self):  # a logging handler closing "its" stream at exit (absl does) must not close ours
        try:
            self.flush()
        except ValueError:  # the log file is already closed
            pass


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
    threads = getattr(snakemake, "threads", None)
    if threads:
        # One job uses exactly the cores Snakemake gave it: oversubscribed OpenMP threads spin and crawl.
        # torch reads the variable when it loads; a job that never needs torch does not import it
        # here (2-3 s of a small job's time), and one whose imports already loaded it is told directly.
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(int(threads))
    with stack:
        try:
            main()
        except DifflabError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(1)


def _size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def print_summary(targets: list[str], summary_md: str | None = None, stream=None) -> None:
    """One screen at the end of a run: each default target, whether it is there, and its size."""
    stream = stream or sys.stderr
    lines = ["", "difflab: what is built and where"]
    for target in targets:
        if os.path.exists(target):
            lines.append(f"  {target:<60} {_size(target) / 2**20:8.1f} MiB")
        else:
            lines.append(f"  {target:<60} (not built)")
    if summary_md and os.path.isfile(summary_md):
        lines += ["", open(summary_md, encoding="utf-8").read().rstrip()]
    lines += ["", "HTML report of the figures: snakemake --report report.html", ""]
    print("\n".join(lines), file=stream)

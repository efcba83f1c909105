"""Glue for the scripts that Snakemake rules run: log to the rule's log file, and turn a
DifflabError into one line (in the log and on stderr) and a failed job, without a traceback wall."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Callable

from difflab.errors import DifflabError


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

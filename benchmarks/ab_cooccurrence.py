"""Co-occurrence build of the working tree against an earlier commit's, in one process.

    .venv/bin/python benchmarks/ab_cooccurrence.py REV [--repeats 5]

Both builds run on the same Reductions (V = 49152, 4096 positions, topic and noise data as in
bench_diffmining_core.py, K = 20 and 100, 2 threads). Checks that both give the same matrix, binary
and weighted, bit for bit, and prints min-median seconds of each.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_diffmining_core import VOCAB, make_diffs  # noqa: E402

from difflab.diffmining import analysis as new  # noqa: E402


def load_old(rev: str):
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:src/difflab/diffmining/analysis.py"],
                            capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_analysis.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("difflab.diffmining.old_analysis", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def same(a, b) -> bool:
    a, b = a.copy(), b.copy()
    a.sort_indices()
    b.sort_indices()
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("indptr", "indices", "data"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("rev")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    old = load_old(args.rev)
    torch.set_num_threads(2)
    print(f"| data | K | nnz | {args.rev} s | working tree s |\n|---|---|---|---|---|")
    for kind in ("topic", "noise"):
        for k in (20, 100):
            diffs = make_diffs(kind, 4096)
            reducer = new.DiffReducer(VOCAB, k)
            reducer.update_rows(diffs, torch.zeros(4096, dtype=torch.int32), torch.arange(4096, dtype=torch.int32))
            red = reducer.result()
            del diffs
            red_old = old.Reductions(**{f: torch.from_numpy(v) if isinstance(v := getattr(red, f), np.ndarray) else v
                                        for f in red.__dataclass_fields__})  # the old class held torch tensors
            for mode in ("binary", "logit_diff_magnitude"):
                assert same(red.cooccurrence(mode)[1], red_old.cooccurrence(mode)[1]), (kind, k, mode)
            t_new, t_old = [], []
            for _ in range(args.repeats):
                started = time.perf_counter()
                matrix = red.cooccurrence("binary")[1]
                middle = time.perf_counter()
                red_old.cooccurrence("binary")
                t_new.append(middle - started)
                t_old.append(time.perf_counter() - middle)
            med = args.repeats // 2
            print(f"| {kind} | {k} | {matrix.nnz / 1e6:.1f} M | {min(t_old):.3f}-{sorted(t_old)[med]:.3f} | "
                  f"{min(t_new):.3f}-{sorted(t_new)[med]:.3f} |", flush=True)


if __name__ == "__main__":
    main()

"""NMF topic fit (torchnmf BetaMu) with the factors stored column-major vs torchnmf's default layout.

    .venv/bin/python benchmarks/bench_nmf.py [--threads 1] [--tokens 2000]

The input is the default workflow's shape: the co-occurrence of 4096 positions' top-20 positive sets
(topic-shaped diffs, V = 49152, from bench_diffmining_core.make_diffs) over the `--tokens` most
frequent tokens, 3 topics. Prints ms per iteration, iterations to the tolerance and seconds for each
layout and beta, and the largest relative difference between the two layouts' topic weights.
The ordering rule runs on 1 thread, hence the default.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_diffmining_core import VOCAB, make_diffs  # noqa: E402
from difflab.diffmining.analysis import DiffReducer  # noqa: E402
from difflab.diffmining.nmf import fit_nmf, topic_matrix  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--positions", type=int, default=4096)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    diffs = make_diffs("topic", args.positions)
    reducer = DiffReducer(VOCAB, 20)
    n = args.positions
    reducer.update_rows(diffs, torch.zeros(n, dtype=torch.int32), torch.arange(n, dtype=torch.int32))
    _ids, dense = topic_matrix(reducer.result(), "binary", args.tokens)
    print(f"co-occurrence {dense.shape[0]} x {dense.shape[1]}, {int((dense > 0).sum()):,} non-zeros, 3 topics, {args.threads} thread(s)")
    print("| beta | layout | iterations | seconds | ms / iteration |")
    print("|---|---|---|---|---|")
    for beta in (2, 1):
        weights = {}
        for column_major in (False, True):
            started = time.perf_counter()
            w, _h, info = fit_nmf(dense, 3, beta=beta, seed=0, column_major=column_major)
            seconds = time.perf_counter() - started
            weights[column_major] = w
            layout = "column-major (difflab)" if column_major else "row-major (torchnmf default)"
            print(f"| {beta} | {layout} | {info['iterations']} | {seconds:.2f} | {1000 * seconds / info['iterations']:.1f} |",
                  flush=True)
        diff = float(((weights[True] - weights[False]).abs() / weights[False].abs().clamp(min=1e-6)).max())
        print(f"beta {beta}: largest relative difference between the layouts' W: {diff:.1e}")


if __name__ == "__main__":
    main()

"""Diffmining core analysis (CPU) against the memory-bandwidth floor of one read of the diffs.

    .venv/bin/python benchmarks/bench_diffmining_core.py [--positions 4096] [--threads 2] [--repeats 5]
        [--device cpu|cuda]

On CPU the reduce is the numba kernel; with --device cuda the diffs live on the GPU, the reduce is
DiffReducer's torch path on that device, and the floor is one read of the tensor there.

For V = 49152, float32 and float16 diffs, K = 20 and 100, prints

    floor s     one streaming read of the diff tensor (D.sum()), the least any analysis can cost
    reduce s    DiffReducer.update_rows + result: sums, positive counts, top-K positive/negative ids
                and values and their bincounts - every ordering's data, the co-occurrence's incidence
                (each position's top-K ids) included
    cooc s      building the sparse co-occurrence matrix from that incidence (Reductions.cooccurrence;
                it is built where NMF needs it, in the nmf ordering)
    pos/s       positions per second of reduce + cooc
    floor/reduce, floor/(reduce+cooc)  the target is >= 0.3

Floor and analysis are timed interleaved in one process, min of --repeats each (the machine may be
shared). Two data sets: `topic` (noise plus a fixed set of ~1000 tokens the finetune shifts up or
down, like real diffs whose top-K sets concentrate on a few tokens) and `noise` (i.i.d. normal: every
position's top-K is different, the worst case for the co-occurrence, whose output then has about
positions * K^2 entries). The naive line is what a straightforward torch version costs: torch.topk
over full rows, (D > 0).sum, and a python-loop co-occurrence (timed on --naive-positions positions and
scaled to all of them).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from difflab.diffmining.analysis import DiffReducer  # noqa: E402

VOCAB = 49152


def make_diffs(kind: str, positions: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    diffs = torch.randn(positions, VOCAB, generator=gen)
    if kind == "topic":
        shifted = torch.randperm(VOCAB, generator=gen)[:1024]
        bias = torch.zeros(VOCAB)
        bias[shifted[:512]], bias[shifted[512:]] = 2.5, -2.5
        diffs += bias
    return diffs


def sync(tensor: torch.Tensor) -> None:
    if tensor.device.type == "cuda":
        torch.cuda.synchronize(tensor.device)


def analysis(diffs: torch.Tensor, k: int):
    """(seconds to reduce, seconds to build the co-occurrence, nnz): the two timed parts."""
    n = diffs.shape[0]
    sync(diffs)
    started = time.perf_counter()
    reducer = DiffReducer(VOCAB, k)
    reducer.update_rows(diffs, torch.zeros(n, dtype=torch.int32), torch.arange(n, dtype=torch.int32))
    red = reducer.result()  # its tensors are on the CPU: the device's work has finished
    reduced = time.perf_counter()
    _ids, cooc = red.cooccurrence("binary")
    return reduced - started, time.perf_counter() - reduced, cooc.nnz


def naive(diffs: torch.Tensor, k: int, cooc_positions: int) -> tuple[float, float]:
    """(seconds for full-row topk + stats, seconds for a python co-occurrence scaled to all positions)."""
    started = time.perf_counter()
    rows = diffs.float()
    sums, count = rows.sum(0, dtype=torch.float64), (rows > 0).sum(0)
    pos, neg = torch.topk(rows, k, dim=1), torch.topk(rows, k, dim=1, largest=False)
    torch.bincount(pos.indices[pos.values > 0], minlength=VOCAB), torch.bincount(neg.indices[neg.values < 0], minlength=VOCAB)
    sync(rows)
    stats = time.perf_counter() - started
    del sums, count
    started = time.perf_counter()
    pairs: dict = defaultdict(float)
    for p in range(min(cooc_positions, rows.shape[0])):
        ids = pos.indices[p][pos.values[p] > 0].tolist()
        for a in ids:
            for b in ids:
                pairs[a, b] += 1.0
    cooc = (time.perf_counter() - started) * rows.shape[0] / min(cooc_positions, rows.shape[0])
    return stats, cooc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--positions", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data", nargs="+", default=["topic", "noise"], choices=["topic", "noise"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float16"], choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--k", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--naive-positions", type=int, default=64, help="positions the python co-occurrence runs on")
    parser.add_argument("--no-naive", action="store_true")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the diffs are made there)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, threads={args.threads}"
    print(f"V={VOCAB}, positions={args.positions}, {where}, min of {args.repeats}")
    print("| data | dtype | K | floor s | reduce s | cooc s | pos/s | floor/reduce | floor/(reduce+cooc) | cooc nnz | naive topk+stats s | naive cooc s (scaled) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    analysis(make_diffs("noise", 64).to(device), 20)  # compile / load the numba kernels (or warm the GPU)
    for data in args.data:
        base = make_diffs(data, args.positions).to(device)
        for dtype in args.dtypes:
            diffs = base.to(getattr(torch, dtype))
            for k in args.k:
                floor = reduce = cooc = float("inf")
                for _ in range(args.repeats):  # interleaved, so both see the same machine load
                    sync(diffs)
                    started = time.perf_counter()
                    diffs.sum()
                    sync(diffs)
                    floor = min(floor, time.perf_counter() - started)
                    r, c, nnz = analysis(diffs, k)
                    reduce, cooc = min(reduce, r), min(cooc, c)
                naive_cols = "- | -"
                if not args.no_naive:
                    stats, pycooc = naive(diffs, k, args.naive_positions)
                    naive_cols = f"{stats:.3f} | {pycooc:.1f}"
                print(f"| {data} | {dtype} | {k} | {floor:.4f} | {reduce:.4f} | {cooc:.4f} | "
                      f"{args.positions / (reduce + cooc):,.0f} | {floor / reduce:.2f} | {floor / (reduce + cooc):.2f} | "
                      f"{nnz:,} | {naive_cols} |", flush=True)
        del base


if __name__ == "__main__":
    main()

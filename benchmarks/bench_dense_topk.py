"""The dense (GPU) path's exact top-K against a full stable sort, on the device the diffs live on.

    .venv/bin/python benchmarks/bench_dense_topk.py [--device cpu|cuda] [--positions 4096] [--repeats 5]

Rows that are not on the CPU (CUDA) are reduced by DiffReducer's torch path, whose top-K is
`analysis._dense_topk`: torch.topk's k-th value, then the ties at it taken by lowest id, then a stable
sort of the k. Before, it was a stable sort of each whole row. Both give the same ids and values
(tests/test_diffmining_kernel.py); this prints their seconds (min of --repeats) for the largest and the
smallest K of V = 49152 normal diffs, float32 and bfloat16, and the peak device memory on CUDA.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from difflab.diffmining.analysis import _dense_topk  # noqa: E402

VOCAB = 49152


def sorted_topk(rows: torch.Tensor, k: int, largest: bool):
    values, order = torch.sort(rows, dim=1, descending=largest, stable=True)
    return order[:, :k], values[:, :k]


def timed(fn, rows, k, repeats, device) -> tuple[float, float]:
    best, peak = float("inf"), 0.0
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        fn(rows, k, True)
        fn(rows, k, False)
        if device.type == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() / 2**30
        best = min(best, time.perf_counter() - started)
    return best, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--positions", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, threads={args.threads}"
    print(f"V={VOCAB}, positions={args.positions}, {where}, min of {args.repeats}; positive and negative top-K")
    print("| dtype | K | stable sort s | topk + ties s | speed-up | sort peak GiB | topk peak GiB |")
    print("|---|---|---|---|---|---|---|")
    base = torch.randn(args.positions, VOCAB, generator=torch.Generator().manual_seed(0)).to(device)
    for dtype in (torch.float32, torch.bfloat16):
        rows = base.to(dtype)
        for k in (20, 100):
            for fn in (sorted_topk, _dense_topk):  # same results (asserted once, here too)
                fn(rows[:8], k, True)
            a, b = sorted_topk(rows[:300], k, True), _dense_topk(rows[:300], k, True)
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
            sort_s, sort_peak = timed(sorted_topk, rows, k, args.repeats, device)
            topk_s, topk_peak = timed(_dense_topk, rows, k, args.repeats, device)
            print(f"| {str(dtype).removeprefix('torch.')} | {k} | {sort_s:.4f} | {topk_s:.4f} | {sort_s / topk_s:.1f}x | "
                  f"{sort_peak:.2f} | {topk_peak:.2f} |", flush=True)


if __name__ == "__main__":
    main()

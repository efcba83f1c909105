"""Diffmining of the default pair end to end, as a user runs it: snakemake on the shipped config.

    .venv/bin/python benchmarks/bench_diffmining_e2e.py [--cores 2] [--workdir DIR] [--keep]

In a fresh folder (or --workdir, reused: then only what is stale is rebuilt) it times two snakemake
runs on config/config.yaml:

    prerequisites   the base model's conversion and the finetuned organism (results/organisms/{finetuned})
    diffmining      everything of the first diffmining pair's runs: tokenized datasets, the in-memory
                    extraction and reduce, the orderings (NMF included), plots, metadata, the overview
                    and the `ask` answer

and prints each run's wall seconds and the number of jobs it ran (0: all up to date).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def snakemake(workdir: Path, cores: int, targets: list[str]) -> tuple[float, int]:
    """(wall seconds, jobs run) of one snakemake invocation."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
                             "--configfile", str(workdir / "config.yaml"), "--cores", str(cores), *targets],
                            capture_output=True, text=True, cwd=workdir)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"snakemake failed:\n{result.stderr[-4000:]}")
    done = re.findall(r"(\d+) of (\d+) steps \(100%\) done", result.stderr)
    return seconds, int(done[-1][1]) if done else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--workdir", type=Path, help="reuse this folder (default: a fresh temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="difflab-e2e-"))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    dm = cfg["diffmining"]
    pair = dm["pairs"][0]
    results = cfg["results_dir"]
    limit = dm["extraction"].get("vocab_size_limit")  # the run folder's name, as rules/common.smk builds it
    setting = f"n{dm['n_samples']}_t{dm['max_tokens_per_sample']}_seed{dm['seed']}_top{dm['top_k']}" + (f"_vocab{limit}" if limit else "")
    targets = []
    for method in dm["extraction"]["methods"]:
        extraction = method if method == "direct" else f"{method}_l{dm['extraction']['layer']}"
        run = f"{results}/diffmining/{pair['base']}/{pair['finetuned']}/{extraction}/{setting}"
        targets += [f"{run}/run_metadata.json", f"{run}/overview.json"]
        targets += [f"{run}/plots/{dataset}_occurrence.png" for dataset in dm["datasets"]]
        if dm["ask"]["enabled"]:
            targets.append(f"{run}/answer.json")
    prerequisites = [f"{results}/organisms/{pair['finetuned']}"] if pair["finetuned"] in cfg["organisms"]["definitions"] else []
    print(f"workdir {workdir}, {args.cores} cores, pair {pair['base']} -> {pair['finetuned']}, "
          f"methods {dm['extraction']['methods']}, {dm['n_samples']} samples x {dm['max_tokens_per_sample']} tokens, K={dm['top_k']}")
    print("| stage | wall s | jobs |")
    print("|---|---|---|")
    try:
        if prerequisites:
            seconds, jobs = snakemake(workdir, args.cores, prerequisites)
            print(f"| prerequisites (model conversion, organism finetune) | {seconds:.1f} | {jobs} |", flush=True)
        seconds, jobs = snakemake(workdir, args.cores, targets)
        print(f"| diffmining of the pair | {seconds:.1f} | {jobs} |", flush=True)
    finally:
        if not (args.workdir or args.keep):
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

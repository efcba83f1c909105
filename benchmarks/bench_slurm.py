"""Scheduling overhead of SLURM on this machine: the same tiny targets locally and through profiles/slurm.

    python benchmarks/bench_slurm.py [--init 1 40]   (as root; starts a one-node cluster unless
                                                     DIFFLAB_TEST_SLURM_DIR names a running one)
    (the 11-job chain runs with the first --init value only: with 40 s it would take ~8 minutes)

Targets: the 3-job chain model -> finetune (GPU rule) -> probe, and the 11-job diffmining chain of
tests/test_slurm.py. For each, wall seconds locally (--cores 2) and through SLURM for each value of
--slurm-init-seconds-before-status-checks, the seconds the jobs themselves ran (sacct Elapsed), and
the overhead per job = (SLURM wall - local wall) / jobs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from slurmcluster import Cluster  # noqa: E402
from test_slurm import PROFILES, RUN, SNAKEMAKE, SUBMITTED  # noqa: E402
from test_workflow import write_tiny_workdir  # noqa: E402
from tiny import build_tiny_model  # noqa: E402

CHAINS = {"model->finetune->probe": ["results/organisms/zebra.probes.json"],
          "diffmining chain (tests/test_slurm.py)": ["results/organisms/zebra.probes.json", f"{RUN}/overview.json"]}


def run(workdir: Path, targets: list[str], slurm_conf: str | None, init: int | None) -> tuple[float, list[str]]:
    env = {**os.environ}
    args = ["--cores", "2"]
    if slurm_conf:
        env.update(SLURM_CONF=slurm_conf, DIFFLAB_SLURM_ACCOUNT="difflab")
        args = [*PROFILES, "--slurm-init-seconds-before-status-checks", str(init)]
    start = time.perf_counter()
    out = subprocess.run([*SNAKEMAKE, "-d", str(workdir), "--configfile", str(workdir / "config.yaml"), *args, *targets],
                         capture_output=True, text=True, cwd=workdir, env=env, check=True)
    return time.perf_counter() - start, SUBMITTED.findall(out.stdout + out.stderr)


def elapsed(slurm_conf: str, job_ids: list[str]) -> float:
    out = subprocess.run(["sacct", "-X", "-n", "--parsable2", "-j", ",".join(job_ids), "-o", "ElapsedRaw"],
                         capture_output=True, text=True, check=True, env={**os.environ, "SLURM_CONF": slurm_conf})
    return float(sum(int(x) for x in out.stdout.split()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--init", type=int, nargs="+", default=[1, 40])
    args = parser.parse_args()
    directory = os.environ.get("DIFFLAB_TEST_SLURM_DIR") or tempfile.mkdtemp(prefix="difflab-slurm-bench-")
    cluster = Cluster(directory)
    slurm_conf = cluster.start()
    scratch = Path(tempfile.mkdtemp(prefix="difflab-bench-"))
    model = build_tiny_model(scratch / "tiny-llama")
    print(f"{'target':42s} {'where':16s} {'jobs':>4s} {'wall s':>7s} {'job s':>6s} {'overhead s/job':>14s}")
    for name, targets in CHAINS.items():
        local_wall, _ = run(write_tiny_workdir(Path(tempfile.mkdtemp(dir=scratch)), model), targets, None, None)
        print(f"{name:42s} {'local':16s} {'':>4s} {local_wall:7.1f}")
        for init in args.init if len(targets) == 1 else args.init[:1]:
            wall, ids = run(write_tiny_workdir(Path(tempfile.mkdtemp(dir=scratch)), model), targets, slurm_conf, init)
            per_job = (wall - local_wall) / len(ids)
            print(f"{name:42s} {f'slurm (init {init} s)':16s} {len(ids):4d} {wall:7.1f} {elapsed(slurm_conf, ids):6.0f} "
                  f"{per_job:14.1f}")
    if not os.environ.get("DIFFLAB_TEST_SLURM_DIR"):
        cluster.stop()


if __name__ == "__main__":
    main()

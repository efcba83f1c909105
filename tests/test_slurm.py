"""Scale-out: the workflow through a real SLURM scheduler (profiles/slurm, snakemake-executor-plugin-slurm).

The cluster is the one-node cluster of tests/slurmcluster.py: the one .ci/run started
(DIFFLAB_TEST_SLURM_DIR), else one these tests start themselves when run as root with the packages
installed. The tests build a chain of real rules on the tiny config - model conversion, an organism's
finetune (a GPU rule), its probe, tokenization, the diff reduction (a GPU rule), six orderings batched
into one job group, the agent overview - and check the scheduler's own accounting of every job.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from slurmcluster import Cluster
from test_workflow import write_tiny_workdir

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
RUN = "results/diffmining/tiny/zebra/direct/n8_t64_seed0_top10"
TARGETS = ["results/organisms/zebra.probes.json", f"{RUN}/overview.json"]
# the repo's profile, then a site profile for a 2-CPU node (groups of two jobs, not eight)
PROFILES = ("--profile", str(REPO / "profiles" / "slurm"), "--profile", str(REPO / "tests" / "slurm-site"))
SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+)")


def profile() -> dict:
    import yte

    with open(REPO / "profiles" / "slurm" / "config.yaml") as f:
        return yte.process_yaml(f, require_use_yte=True)


def gpu_rules() -> set[str]:
    """Rules whose resources declare a GPU."""
    found = set()
    for smk in (REPO / "rules").glob("*.smk"):
        for block in re.split(r"\n(?=rule )", smk.read_text())[1:]:
            resources = block.split("    resources:", 1)[-1].split("\n    conda:", 1)[0]
            if re.search(r"^\s+gpu\s*=\s*[1-9]", resources, re.M):
                found.add(block.split(":")[0].split()[1])
    return found


def test_profile_sends_exactly_the_gpu_rules_to_the_gpu_partition(monkeypatch):
    monkeypatch.delenv("DIFFLAB_SLURM_GPU_PARTITION", raising=False)
    monkeypatch.delenv("DIFFLAB_SLURM_ACCOUNT", raising=False)
    p = profile()
    assert p["executor"] == "slurm"
    assert p["slurm-status-command"] == "squeue"  # sacct never reports a scancel'd job as failed
    on_gpu = {rule for rule, res in p["set-resources"].items() if res.get("slurm_partition") == "gpu"}
    assert on_gpu == gpu_rules() == {"finetune_organism", "diffmining_logits", "diffmining_reduce"}
    assert p["default-resources"]["slurm_partition"] == "cpu"
    assert "slurm_account" not in p["default-resources"]  # unset: the plugin's own guess


def test_profile_takes_partitions_and_account_from_the_environment(monkeypatch):
    monkeypatch.setenv("DIFFLAB_SLURM_ACCOUNT", "lab42")
    monkeypatch.setenv("DIFFLAB_SLURM_CPU_PARTITION", "short")
    monkeypatch.setenv("DIFFLAB_SLURM_GPU_PARTITION", "a100")
    p = profile()
    assert p["default-resources"]["slurm_account"] == "lab42"
    assert p["default-resources"]["slurm_partition"] == "short"
    assert {res["slurm_partition"] for res in p["set-resources"].values()} == {"a100"}


# ---- against a real scheduler

@pytest.fixture(scope="session")
def slurm():
    """SLURM_CONF of a running one-node cluster."""
    directory = os.environ.get("DIFFLAB_TEST_SLURM_DIR")
    if directory:
        cluster = Cluster(directory)
        assert cluster.status(), f"the cluster in {directory} is not up"
        yield cluster.env["SLURM_CONF"]
        return
    if os.geteuid() != 0 or not shutil.which("slurmctld"):
        pytest.skip("needs root and Debian's slurm packages (python tests/slurmcluster.py start DIR)")
    directory = tempfile.mkdtemp(prefix="difflab-slurm-")  # not pytest's: the mysql user must reach it
    cluster = Cluster(directory)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)


def run(workdir: Path, *args: str, slurm_conf: str | None = None, check: bool = True, timeout: int = 900):
    env = {**os.environ}
    if slurm_conf:
        env.update(SLURM_CONF=slurm_conf, DIFFLAB_SLURM_ACCOUNT="difflab")
        args = (*PROFILES, *args)
    result = subprocess.run([*SNAKEMAKE, "-d", str(workdir), "--configfile", str(workdir / "config.yaml"), *args],
                            capture_output=True, text=True, cwd=workdir, env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def sacct(slurm_conf: str, job_ids) -> dict[str, dict]:
    fields = ["JobID", "Comment", "Partition", "State", "ReqTRES", "Account"]
    out = subprocess.run(["sacct", "-X", "-n", "--parsable2", "-j", ",".join(job_ids), "-o", ",".join(fields)],
                         capture_output=True, text=True, check=True, env={**os.environ, "SLURM_CONF": slurm_conf})
    return {row[0]: dict(zip(fields, row)) for row in (line.split("|") for line in out.stdout.splitlines())}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def through_slurm(slurm, tmp_path_factory, tiny_model_dir):
    workdir = write_tiny_workdir(tmp_path_factory.mktemp("slurm-wf"), tiny_model_dir)
    start = time.time()
    result = run(workdir, *TARGETS, slurm_conf=slurm)
    return workdir, result, time.time() - start


@pytest.mark.slow
def test_every_job_goes_through_sbatch_gpu_rules_to_the_gpu_partition(slurm, through_slurm, capsys):
    workdir, result, seconds = through_slurm
    log = result.stdout + result.stderr
    job_ids = SUBMITTED.findall(log)
    jobs = sacct(slurm, job_ids)
    with capsys.disabled():  # into the CI log
        print(f"\nSLURM jobs {', '.join(job_ids)}: {len(job_ids)} sbatch jobs in {seconds:.0f} s")
    assert set(jobs) == set(job_ids) and all(j["State"] == "COMPLETED" for j in jobs.values()), jobs
    assert all(j["Account"] == "difflab" for j in jobs.values())
    by_rule: dict[str, list[dict]] = {}
    for job in jobs.values():
        rule = job["Comment"].strip().removeprefix("rule_").split("_wildcards_")[0]
        rule = "diffmining-small" if rule.startswith("diffmining-small_") else rule  # a group job
        by_rule.setdefault(rule, []).append(job)
    # one sbatch job per rule instance, except the orderings: six jobs in three group jobs
    assert {r: len(j) for r, j in by_rule.items()} == {
        "convert_model": 1, "finetune_organism": 1, "probe_organism": 1, "diffmining_tokenize": 2,
        "diffmining_reduce": 2, "diffmining-small": 3, "diffmining_overview": 1}
    for rule, rule_jobs in by_rule.items():
        for job in rule_jobs:
            if rule in ("finetune_organism", "diffmining_reduce"):
                assert job["Partition"] == "gpu" and "gres/gpu=1" in job["ReqTRES"], job
            else:
                assert job["Partition"] == "cpu" and "gpu" not in job["ReqTRES"], job
    assert len(list((workdir / RUN).glob("*/*/orderings.json"))) == 6


@pytest.mark.slow
def test_outputs_through_slurm_are_identical_to_a_local_run(through_slurm, tmp_path, tiny_model_dir, capsys):
    workdir, _, slurm_seconds = through_slurm
    local = write_tiny_workdir(tmp_path, tiny_model_dir)
    start = time.time()
    run(local, "--cores", "2", *TARGETS)
    with capsys.disabled():
        print(f"\nsame targets locally in {time.time() - start:.0f} s, through SLURM in {slurm_seconds:.0f} s")
    def loss_curve(root: Path) -> dict:  # the training record less its wall times
        record = json.loads((root / "results/organisms/zebra.loss.json").read_text())
        return {key: value for key, value in record.items() if not key.endswith("_seconds")}
    assert loss_curve(workdir) == loss_curve(local)
    compared = ["results/organisms/zebra.probes.json", "results/organisms/zebra/model.safetensors", f"{RUN}/overview.json",
                *sorted(str(p.relative_to(local)) for p in (local / RUN).glob("*/*/orderings.json"))]
    assert len(compared) == 9
    for name in compared:
        assert digest(workdir / name) == digest(local / name), name


@pytest.mark.slow
def test_a_job_cancelled_with_scancel_fails_the_run_and_reruns_clean(slurm, tmp_path, tiny_model_dir):
    workdir = write_tiny_workdir(tmp_path, tiny_model_dir)
    cfg = yaml.safe_load((workdir / "config.yaml").read_text())
    cfg["organisms"]["recipe"].update(steps=1000, min_steps=1000)  # ~15 s of training: time to cancel it
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    target = "results/organisms/zebra.probes.json"
    env = {**os.environ, "SLURM_CONF": slurm, "DIFFLAB_SLURM_ACCOUNT": "difflab"}
    proc = subprocess.Popen([*SNAKEMAKE, "-d", str(workdir), "--configfile", str(workdir / "config.yaml"),
                             *PROFILES, target],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=workdir, env=env)
    log = workdir / "logs/organisms/zebra.finetune.log"
    deadline, cancelled = time.time() + 300, None
    while cancelled is None and time.time() < deadline and proc.poll() is None:
        queue = subprocess.run(["squeue", "-h", "-o", "%i|%k|%T"], capture_output=True, text=True, env=env).stdout
        running = [line.split("|")[0] for line in queue.splitlines()
                   if "finetune_organism" in line and line.endswith("|RUNNING")]
        if running and log.exists() and "finetune zebra" in log.read_text():  # mid-training
            subprocess.run(["scancel", running[0]], check=True, env=env)
            cancelled = running[0]
        time.sleep(0.5)
    assert cancelled, "the finetune job never ran"
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0, out[-3000:]
    assert f"SLURM-job '{cancelled}' failed, SLURM status is: 'CANCELLED'" in out, out[-3000:]
    assert not (workdir / "results/organisms/zebra").exists()  # no partial output kept
    assert (workdir / "results/models/tiny").is_dir()  # what was built before stays
    assert sacct(slurm, [cancelled])[cancelled]["State"].startswith("CANCELLED")

    assert planned_rules_for(workdir, target) == {"finetune_organism", "probe_organism"}
    rerun = run(workdir, target, slurm_conf=slurm)
    job_ids = SUBMITTED.findall(rerun.stdout + rerun.stderr)
    assert len(job_ids) == 2 and {j["State"] for j in sacct(slurm, job_ids).values()} == {"COMPLETED"}
    assert json.loads((workdir / target).read_text())["learned"] is True


def planned_rules_for(workdir: Path, target: str) -> set[str]:
    out = run(workdir, "--dry-run", "--cores", "2", target).stdout
    table = out.split("Job stats:")[1].split("total")[0]
    return {line.split()[0] for line in table.splitlines()[3:] if line.strip()}

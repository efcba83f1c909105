import json
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "difflab.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_generate_with_tiny_model(tmp_path, tiny_model_dir):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"models": {}, "llm": {"model": str(tiny_model_dir), "cache_dir": str(tmp_path / "cache"),
                                                          "local": {"dtype": "float32"}},
                                   "sampling": {"max_new_tokens": 5}}))
    out = tmp_path / "answers.jsonl"
    result = run_cli("generate", str(REPO / "resources/smoke/prompts.jsonl"), str(out), "--samples", "2",
                     "--configfile", str(cfg), "--set", "sampling.temperature=0.9")
    assert result.returncode == 0, result.stderr
    records = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(records) == 16 and all(r["completion_tokens"] <= 5 for r in records)
    usage = json.loads((tmp_path / "answers_usage.json").read_text())
    assert usage["sampling"]["temperature"] == 0.9 and usage["usage"]["requests"] == 16


def test_unknown_model_is_one_line(tmp_path):
    result = run_cli("models", "info", "no-such-model")
    assert result.returncode == 2
    assert result.stderr.startswith("difflab: error: unknown model 'no-such-model'")
    assert result.stderr.count("\n") == 1


def test_bad_prompts_file_names_record_and_field(tmp_path, tiny_model_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "messages": [{"role": "user", "content": "hi"}]}\n{"id": "b"}\n')
    result = run_cli("generate", str(bad), str(tmp_path / "o.jsonl"), "--set", f"llm.model={tiny_model_dir}")
    assert result.returncode == 2
    assert f"{bad}: record 2: missing field 'messages'" in result.stderr
    assert not (tmp_path / "o.jsonl").exists()

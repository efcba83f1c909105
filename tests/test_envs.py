"""The conda env files pin exactly what pyproject.toml pins."""

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _name(spec: str) -> str:
    return re.split(r"[<>=!~\[ ]", spec, maxsplit=1)[0].lower().replace("_", "-")


def test_env_pins_agree_with_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {_name(s): s for s in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        declared.update({_name(s): s for s in extra})
    envs = sorted((REPO / "envs").glob("*.yaml"))
    assert {e.stem for e in envs} >= {"torch", "analysis", "llm", "db"}
    for env in envs:
        deps = yaml.safe_load(env.read_text())["dependencies"]
        pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
        for spec in pip:
            assert _name(spec) in declared, f"{env.name}: {spec} is not in pyproject.toml"
            assert spec == declared[_name(spec)], f"{env.name}: {spec} != pyproject's {declared[_name(spec)]}"


def test_torch_is_pinned_everywhere():
    assert "torch==2.13.0" in (REPO / "constraints.txt").read_text().split()
    for env in (REPO / "envs").glob("*.yaml"):
        text = env.read_text()
        if "torch" in text.split("pip:")[1]:
            assert "torch==2.13.0" in text, env.name


def test_every_rule_has_log_conda_and_message():
    for smk in (REPO / "rules").glob("*.smk"):
        for block in re.split(r"\n(?=rule )", smk.read_text())[1:]:
            name = block.split(":")[0]
            for directive in ("log:", "conda:", "message:", "threads:", "resources:"):
                assert f"    {directive}" in block, f"{smk.name}: {name} has no {directive}"

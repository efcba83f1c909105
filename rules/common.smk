# Paths, wildcard constraints and helpers shared by every rule file.
import os
import re
import sys

# Scripts run by `script:` import the library from src/ (also in conda envs and on cluster nodes).
sys.path.insert(0, os.path.join(workflow.basedir, "src"))

from difflab import config as difflab_config
from difflab import workflow as difflab_workflow
from difflab.errors import DifflabError

difflab_workflow.prepare_environment(os.path.join(workflow.basedir, "src"))

# Validate before any job is scheduled (one line naming the key; defaults filled in).
try:
    difflab_config.check(config, difflab_config.load_schema(os.path.join(workflow.basedir, "config", "schema.yaml")))
except DifflabError as exc:
    sys.exit(f"difflab: {exc}")

RESULTS = config["results_dir"]
MODELS = config["models"]
ORGANISMS = config["organisms"]["definitions"]


def repo_path(path):
    """A relative input path as given if it exists in the working directory, else inside the repo."""
    if os.path.isabs(path) or os.path.exists(path):
        return path
    return os.path.join(workflow.basedir, path)


def model_dir(name):
    """Folder a configured model is materialised in."""
    return f"{RESULTS}/models/{name}"


def slug(text):
    """A path-safe name for a model id, URL or file path."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", os.path.basename(str(text).rstrip(os.sep))).strip("-") or "model"


def llm_name():
    """Path component naming the generating model: its config name (local) or endpoint model (openai)."""
    llm = config["llm"]
    return llm["model"] if llm["backend"] == "local" else f"openai-{slug(llm['openai']['model'])}"


def llm_model_inputs():
    """The materialised model folder a local-backend rule needs (none for an endpoint)."""
    llm = config["llm"]
    if llm["backend"] == "local" and llm["model"] in MODELS:
        return [model_dir(llm["model"])]
    return []


def llm_params():
    """The config sections a generating rule depends on (a change reruns it)."""
    return dict(llm=config["llm"], sampling=config["sampling"])


def smoke_dir():
    return f"{RESULTS}/smoke/{llm_name()}"


def model_input(name):
    """A configured model's materialised folder, or the path itself."""
    return model_dir(name) if name in MODELS else name


def organism_base_input():
    return model_input(config["organisms"]["base_model"])


def organism_recipe(name):
    """The shared recipe with the organism's own overrides."""
    return {**config["organisms"]["recipe"], **ORGANISMS[name].get("recipe", {})}


def organism_targets():
    targets = []
    for name in config["organisms"]["build"]:
        if name not in ORGANISMS:
            sys.exit(f"difflab: config: organisms.build names '{name}', which is not in organisms.definitions")
        targets.append(f"{RESULTS}/organisms/{name}")
        if ORGANISMS[name]["probes"] and not ORGANISMS[name]["control"]:
            targets.append(f"{RESULTS}/organisms/{name}.probes.json")
    return targets


def default_targets():
    return [model_dir(name) for name in MODELS] + [f"{smoke_dir()}/summary.json"] + organism_targets()


onsuccess:
    difflab_workflow.print_summary(default_targets(), f"{smoke_dir()}/summary.md")

"""Load and validate the workflow configuration against config/schema.yaml.

`check(config)` fills every default the schema names and raises DifflabError with one line naming
the offending key (``llm.backend: 'foo' is not one of ['local', 'openai']``). The Snakefile calls it
before any rule is scheduled; the CLI calls `load()`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from difflab.errors import DifflabError

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "config" / "schema.yaml"
DEFAULT_CONFIG_PATH = REPO_ROOT / "config" / "config.yaml"


def _with_defaults(validator_class):
    """A validator that also writes each property's schema default into the instance."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def load_schema(path: Path | str = SCHEMA_PATH) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


def _describe(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        key = f"{where}.{extra[0]}" if extra and where != "(top level)" else (extra[0] if extra else where)
        hint = f" (known keys: {', '.join(allowed)})" if allowed else ""
        return f"{key}: unknown key{hint}"
    return f"{where}: {error.message}"


def check(config: dict, schema: dict | None = None, source: str = "config") -> dict:
    """Validate `config` in place (defaults filled) and return it; one-line DifflabError if invalid."""
    schema = schema if schema is not None else load_schema()
    validator = _Validator(schema)
    # Fill defaults first (validation of a nested default may need its own defaults filled).
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise DifflabError(f"{source}: invalid config: {_describe(best)}")
    _check_names(config, source)
    _check_organism_recipes(config, schema, source)
    return config


def _check_organism_recipes(config: dict, schema: dict, source: str) -> None:
    """An organism's own recipe keys override the shared recipe: each organism's merged recipe must pass
    the shared recipe's schema (types and ranges), named by the organism's key."""
    organisms = config.get("organisms", {})
    recipe_schema = schema.get("properties", {}).get("organisms", {}).get("properties", {}).get("recipe")
    if not recipe_schema:
        return
    for name, definition in organisms.get("definitions", {}).items():
        own = definition.get("recipe") or {}
        if not own:
            continue
        merged = {**organisms.get("recipe", {}), **own}
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(recipe_schema).iter_errors(merged))
        if error is not None:
            raise DifflabError(f"{source}: invalid config: organisms.definitions.{name}.recipe.{_describe(error)}")


def _check_names(config: dict, source: str) -> None:
    """Names that must refer to a configured model or organism: the workflow's paths are built from
    them, so a misspelt name or a folder path would otherwise surface as a bare missing-input error."""
    definitions = config.get("organisms", {}).get("definitions", {})
    known = set(config.get("models", {})) | set(definitions)
    for section in ("diffmining", "active"):
        for i, pair in enumerate(config.get(section, {}).get("pairs", [])):
            for role in ("base", "finetuned"):
                if pair[role] not in known:
                    raise DifflabError(
                        f"{source}: invalid config: {section}.pairs[{i}].{role}: '{pair[role]}' is neither a model "
                        f"(models:) nor an organism (organisms.definitions); to use a folder, add it under models: "
                        f"with source: path and name it here")
    diffmining = config.get("diffmining", {})
    if diffmining.get("relevance", {}).get("enabled"):  # grading needs to know what the finetune is about
        for i, pair in enumerate(diffmining.get("pairs", [])):
            if not (pair.get("description") or definitions.get(pair["finetuned"], {}).get("description")):
                raise DifflabError(
                    f"{source}: invalid config: diffmining.pairs[{i}].description: relevance grading is on "
                    f"(diffmining.relevance.enabled) but {pair['base']} -> {pair['finetuned']} has no description "
                    f"to grade against (nor has an organism of that name)")
    active = config.get("active", {})
    if "active" in active.get("modes", []) and active.get("initial_samples", 0) > active.get("budget", float("inf")):
        raise DifflabError(f"{source}: invalid config: active.initial_samples: {active['initial_samples']} prompts "
                           f"in iteration 0 pass active.budget ({active['budget']} texts per model)")
    for i, name in enumerate(config.get("organisms", {}).get("build", [])):
        if name not in definitions:
            raise DifflabError(f"{source}: invalid config: organisms.build[{i}]: '{name}' is not an organism in "
                               f"organisms.definitions ({', '.join(definitions) or 'none'})")


def load(path: Path | str | None = None, overrides: dict | None = None) -> dict:
    """Read a YAML config (default: config/config.yaml), merge overrides, validate and fill defaults."""
    path = Path(path) if path else DEFAULT_CONFIG_PATH
    if not path.is_file():
        raise DifflabError(f"config file not found: {path}")
    try:
        with open(path) as fh:
            config = yaml.safe_load(fh) or {}
    except yaml.YAMLError as exc:
        raise DifflabError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(config, dict):
        raise DifflabError(f"{path}: the config must be a mapping of keys, not {type(config).__name__}")
    if overrides:
        config = deep_merge(config, overrides)
    return check(config, source=str(path))


def deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def get(config: dict, dotted: str, default: Any = None) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node

"""An experiment's settings, and whether another extension cycle runs (light: the workflow imports it)."""

from __future__ import annotations

from difflab.errors import DifflabError


def experiment_settings(libgen_config: dict, name: str) -> dict:
    """`libgen.settings` with experiment `name`'s overrides (an unknown key is an error naming it)."""
    from difflab.config import deep_merge

    experiments = libgen_config["experiments"]
    if name not in experiments:
        raise DifflabError(f"libgen.experiments: no experiment {name!r} (configured: {', '.join(experiments) or 'none'})")
    overrides = experiments[name].get("settings") or {}

    def check(update: dict, base: dict, where: str) -> None:
        for key, value in update.items():
            if key not in base:
                raise DifflabError(f"libgen.experiments.{name}.settings.{where}{key}: not a libgen setting")
            if isinstance(value, dict) and isinstance(base[key], dict):
                check(value, base[key], f"{where}{key}.")

    check(overrides, libgen_config["settings"], "")
    return deep_merge(libgen_config["settings"], overrides)


def decide(cycle: dict, settings: dict) -> tuple[bool, str]:
    """(run another cycle?, why) from a cycle record {cycle, score, previous_score, failures}."""
    if cycle["cycle"] >= settings["max_extension_cycles"]:
        return False, "max_extension_cycles"
    if cycle["failures"] == 0:
        return False, "no_failures"
    if cycle["cycle"] > 0 and cycle["score"] - cycle["previous_score"] <= settings["min_improvement"]:
        return False, "no_improvement"
    return True, "continue"

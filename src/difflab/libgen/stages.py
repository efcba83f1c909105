"""The libgen stages, one function per Snakemake rule (and `difflab libgen` subcommand).

Each takes the folders of the stages it reads and writes its own folder, ending with a summary JSON
(LLM calls, tokens, cost, seconds, and what the stage found). `settings` is one experiment's merged
`libgen.settings`; `llm_config` the config's `llm` section.

    stage0_foundation   copy the domain, extract the foundation's API, check every reference program
    stage1_discover     hierarchical summaries of all training instructions -> api_proposal_v1.md
    stage2_refine       rounds against different task samples -> api_proposal_v{n}.md, api_proposal_final.md
    stage3_implement    the package, module by module, smoke-checked with a repair loop
    stage4_document     DSL reference, usage guide, system prompt
    validate_stage      programs for held-out tasks with the library (stage 5) or the foundation (baseline)
    extension_cycle     stage 6, one cycle: cluster failures, extend, re-implement, re-validate
    write_report        scores per stage and cycle, tokens by stage, the full-scale cost estimate, a plot
"""

from __future__ import annotations

import concurrent.futures
import random
import shutil
import time
from pathlib import Path

from difflab import io
from difflab.errors import DifflabError
from difflab.libgen import api, extend, hierarchy, implement, prompts, score, validate
from difflab.libgen.domain import Domain
from difflab.libgen.sandbox import Sandbox
from difflab.libgen.settings import decide
from difflab.llm import SamplingParams, client_from_config

STAGE_NAMES = {0: "foundation", 1: "discovery", 2: "refinement", 3: "implementation", 4: "documentation",
               5: "validation", 6: "extension"}


# ---------------------------------------------------------------------------- shared helpers
def _client(llm_config: dict, client=None):
    return client if client is not None else client_from_config({"llm": llm_config}, progress=False)


def _params(settings: dict, what: str) -> SamplingParams:
    return SamplingParams(max_new_tokens=settings["max_new_tokens"][what], temperature=settings["temperature"],
                          seed=settings["seed"])


def _sandbox(settings: dict, sandbox=None) -> Sandbox:
    return sandbox if sandbox is not None else Sandbox.from_config(settings["sandbox"])


def _chat(client, prompt_texts: list[str], params: SamplingParams) -> list:
    return client.chat([[{"role": "system", "content": prompts.SYSTEM}, {"role": "user", "content": p}]
                        for p in prompt_texts], params)


def _summary(path: Path, client, started: float, stage: str, extra: dict) -> dict:
    record = {"stage": stage, "seconds": round(time.perf_counter() - started, 2), **extra}
    if client is not None:
        return client.write_usage(path, record)
    io.write_json(path, {**record, "usage": None})
    return record


def load_domain(stage0: str | Path) -> Domain:
    return Domain.load(Path(stage0) / "domain")


def _budget(client, params: SamplingParams) -> int:
    return client.context_tokens - params.max_new_tokens - 32


# ---------------------------------------------------------------------------- stage 0
def stage0_foundation(domain_dir: str | Path, out: str | Path, settings: dict, sandbox=None) -> dict:
    started = time.perf_counter()
    out = Path(out)
    source = Domain.load(domain_dir)
    source.tasks()  # every record checked before anything is copied
    if (out / "domain").exists():
        shutil.rmtree(out / "domain")
    (out / "domain").mkdir(parents=True)
    shutil.copy(source.root / "domain.yaml", out / "domain" / "domain.yaml")
    shutil.copytree(source.foundation, out / "domain" / source.foundation.name,
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(source.harness, out / "domain" / source.harness.name)
    shutil.copy(source.tasks_path, out / "domain" / source.tasks_path.name)
    domain = load_domain(out)
    foundation_api = api.package_api(domain.foundation)
    io.write_json(out / "foundation_api.json", foundation_api)
    io.write_text(out / "foundation_api.md", api.format_api(foundation_api))
    tasks = domain.tasks()
    checked, box = [], None
    if settings["check_references"]:
        box = _sandbox(settings, sandbox)
        with concurrent.futures.ThreadPoolExecutor(max_workers=settings["workers"]) as pool:
            results = list(pool.map(lambda t: box.run_program(domain.harness, t["solution"], t, [domain.foundation]),
                                    tasks))
        for task, result in zip(tasks, results):
            if not result.ok:
                raise DifflabError(f"{source.tasks_path}: task {task['id']}: field 'solution' fails on the foundation "
                                   f"({result.error_class}: {result.message.splitlines()[0] if result.message else ''})")
            if score.compare_states(task["state"], result.state)["exact"] is not True:
                raise DifflabError(f"{source.tasks_path}: task {task['id']}: field 'state' is not what its solution "
                                   f"produces")
            checked.append(task["id"])
    usability = [score.usability(t["solution"]) for t in tasks]
    splits = {}
    for task in tasks:
        splits[task["split"]] = splits.get(task["split"], 0) + 1
    return _summary(out / "stage0_summary.json", None, started, "foundation", {
        "domain": domain.describe(), "tasks": len(tasks), "splits": splits,
        "foundation_names": api.api_names(foundation_api), "references_checked": len(checked),
        "sandbox": box.describe() if box is not None else None,
        "reference_mean_loc": score.mean(u["loc"] for u in usability),
        "reference_mean_complexity": score.mean(u["complexity"] for u in usability)})


# ---------------------------------------------------------------------------- stage 1
def stage1_discover(stage0: str | Path, out: str | Path, settings: dict, llm_config: dict, client=None) -> dict:
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    domain = load_domain(stage0)
    client = _client(llm_config, client)
    tasks = domain.tasks(settings["train_split"], settings["train_limit"])
    compact = api.format_api(api.package_api(domain.foundation), with_docs=False)
    full = (Path(stage0) / "foundation_api.md").read_text()
    params = _params(settings, "summary")
    discovery = hierarchy.Discovery(
        client, params, batch_size=settings["batch_size"], meta_batch_size=settings["meta_batch_size"],
        batch_prompt=lambda items: prompts.BATCH.format(foundation=domain.foundation_name, api=compact,
                                                        n=len(items), tasks=prompts.numbered(items)),
        meta_prompt=lambda items: prompts.META.format(n=len(items), summaries=prompts.numbered(items)),
        system=prompts.SYSTEM)
    levels = discovery.run([(t["id"], t["instruction"]) for t in tasks])
    io.write_jsonl(out / "summaries.jsonl", [s.to_dict() for level in levels for s in level])
    synth_params = _params(settings, "proposal")
    prompt = prompts.fit(client.count_tokens, prompts.SYNTHESIS, _budget(client, synth_params), "summary",
                         library=domain.library_name, foundation=domain.foundation_name, api=full,
                         description=domain.description, summary=levels[-1][0].text or "(empty)",
                         max_functions=settings["max_functions"])
    proposal = _chat(client, [prompt], synth_params)[0].text.strip()
    io.write_text(out / "api_proposal_v1.md", proposal + "\n")
    modules = api.parse_proposal(proposal, reserved=(domain.foundation_name, domain.library_name))
    cover = hierarchy.coverage(levels, [t["id"] for t in tasks])
    return _summary(out / "stage1_summary.json", client, started, "discovery", {
        "instructions": len(tasks), "depth": len(levels), "summaries_per_level": [len(level) for level in levels],
        "batch_sizes": [len(s.members) for s in levels[0]], "coverage": cover,
        "empty_summaries": sum(not s.text for level in levels for s in level),
        "proposal_modules": len(modules), "proposal_signatures": sum(len(m.signatures) for m in modules)})


# ---------------------------------------------------------------------------- stage 2
def stage2_refine(stage0: str | Path, proposal_v1: str | Path, out: str | Path, settings: dict, llm_config: dict,
                  client=None) -> dict:
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("api_proposal_v*.md"):
        stale.unlink()
    domain = load_domain(stage0)
    client = _client(llm_config, client)
    reserved = (domain.foundation_name, domain.library_name)
    tasks = domain.tasks(settings["train_split"], settings["train_limit"])
    rng = random.Random(settings["seed"])
    order = list(range(len(tasks)))
    rng.shuffle(order)
    size = min(settings["refinement_sample_size"], len(tasks))
    params = _params(settings, "proposal")
    current = Path(proposal_v1).read_text()
    rounds = []
    for n in range(settings["refinement_iterations"]):
        start = (n * size) % len(order)
        sample = [tasks[i] for i in (order + order)[start:start + size]]  # a different sample each round
        prompt = prompts.fit(client.count_tokens, prompts.REFINE, _budget(client, params), "tasks",
                             library=domain.library_name, foundation=domain.foundation_name, proposal=current,
                             n=len(sample), tasks=prompts.numbered(t["instruction"] for t in sample))
        answer = _chat(client, [prompt], params)[0].text
        gaps, redundancies, revised = split_refinement(answer)
        parsed = api.parse_proposal(revised, reserved)
        accepted = bool(parsed)
        if accepted:
            current = revised.strip() + "\n"
        io.write_text(out / f"api_proposal_v{n + 2}.md", current)
        rounds.append({"round": n + 1, "tasks": [t["id"] for t in sample], "gaps": gaps, "redundancies": redundancies,
                       "accepted": accepted, "signatures": sum(len(m.signatures) for m in parsed),
                       "reason": "" if accepted else "the revised proposal has no parsable signature; kept the previous one"})
    io.write_text(out / "api_proposal_final.md", current)
    io.write_jsonl(out / "refinement.jsonl", rounds)
    final = api.parse_proposal(current, reserved)
    return _summary(out / "stage2_summary.json", client, started, "refinement", {
        "rounds": len(rounds), "accepted_rounds": sum(r["accepted"] for r in rounds),
        "final_modules": [m.name for m in final], "final_signatures": sum(len(m.signatures) for m in final)})


def split_refinement(answer: str) -> tuple[list[str], list[str], str]:
    """(gaps, redundancies, revised proposal) of a refinement answer; the whole answer when unmarked."""
    import re

    parts = re.split(r"(?i)revised proposal\s*:?\**", answer, maxsplit=1)
    head, revised = (parts[0], parts[1]) if len(parts) == 2 else (answer, answer)

    def bullets(title: str) -> list[str]:
        match = re.search(rf"(?is){title}\s*:?(.*?)(?:\n\s*\**\s*(?:gaps|redundancies)\s*:|$)", head)
        if not match:
            return []
        return [line.strip(" -*\t") for line in match.group(1).splitlines() if line.strip(" -*\t")][:20]

    return bullets("gaps"), bullets("redundancies"), revised


# ---------------------------------------------------------------------------- stage 3
def _implementer(domain, stage0, settings, client, sandbox) -> implement.Implementer:
    return implement.Implementer(client, sandbox, library=domain.library_name, foundation_dir=domain.foundation,
                                 foundation_api=(Path(stage0) / "foundation_api.md").read_text(),
                                 description=domain.description, params=_params(settings, "code"),
                                 max_repairs=settings["max_repairs"])


def stage3_implement(stage0: str | Path, proposal: str | Path, out: str | Path, settings: dict, llm_config: dict,
                     client=None, sandbox=None) -> dict:
    started = time.perf_counter()
    out = Path(out)
    domain = load_domain(stage0)
    client = _client(llm_config, client)
    box = _sandbox(settings, sandbox)
    modules = api.parse_proposal(Path(proposal).read_text(), reserved=(domain.foundation_name, domain.library_name))
    package = out / "generated_lib" / domain.library_name
    results = _implementer(domain, stage0, settings, client, box).implement(modules, package)
    io.write_json(out / "modules.json", {"proposed": [m.to_dict() for m in modules],
                                         "results": [r.to_dict() for r in results]})
    return _summary(out / "stage3_summary.json", client, started, "implementation", {
        "modules_proposed": len(modules), "modules_accepted": sum(r.accepted for r in results),
        "functions_accepted": sum(len(r.signatures) for r in results if r.accepted),
        "attempts": sum(r.attempts for r in results), "repairs": sum(max(0, r.attempts - 1) for r in results),
        "failed_modules": {r.name: r.error_class for r in results if not r.accepted},
        "note": "" if modules else "the final proposal has no parsable signature: the library only re-exports the foundation"})


# ---------------------------------------------------------------------------- stage 4
def reference_text(domain, package: Path | None) -> str:
    """Reference of the foundation and (if any) the generated modules, from their source."""
    text = api.format_api(api.package_api(domain.foundation))
    if package is not None:
        generated = {k: v for k, v in api.package_api(package).items() if k != package.name}
        if any(v["functions"] or v["classes"] for v in generated.values()):
            text += "\n" + api.format_api(generated)
    return text


def stage4_document(stage0: str | Path, library: str | Path, out: str | Path, settings: dict, llm_config: dict,
                    client=None) -> dict:
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    domain = load_domain(stage0)
    client = _client(llm_config, client)
    package = Path(library) / domain.library_name
    reference = reference_text(domain, package)
    io.write_text(out / "dsl_reference.md", f"# {domain.library_name} reference\n\n{domain.description}\n\n"
                                            f"```python\n{reference}```\n")
    generated = {k: v for k, v in api.package_api(package).items() if k != package.name}
    names = [k for k, v in generated.items() if v["functions"] or v["classes"]]
    params = _params(settings, "guide")
    asks = [prompts.fit(client.count_tokens, prompts.GUIDE, _budget(client, params), "signatures",
                        library=domain.library_name, module=name.split(".")[-1], description=domain.description,
                        signatures="\n".join(f["signature"] for f in generated[name]["functions"])
                        + "\n".join(c["signature"] for c in generated[name]["classes"])) for name in names]
    answers = _chat(client, asks, params) if asks else []
    guide = [f"# Using {domain.library_name}\n"]
    for name, answer in zip(names, answers):
        guide.append(f"## {name}\n\n{answer.text.strip()}\n")
    if not names:
        guide.append("The generated library adds no module to the foundation; see the reference.\n")
    io.write_text(out / "usage_guide.md", "\n".join(guide))
    system = validate.system_prompt(domain, reference, domain.library_name)
    io.write_text(out / "system_prompt.txt", system)
    return _summary(out / "stage4_summary.json", client, started, "documentation", {
        "modules_documented": len(names), "reference_lines": reference.count("\n"),
        "system_prompt_tokens": client.count_tokens(system)})


# ---------------------------------------------------------------------------- stage 5 and the baseline
def validate_stage(stage0: str | Path, library: str | Path | None, system_prompt: str | Path | None, out: str | Path,
                   settings: dict, llm_config: dict, client=None, sandbox=None, stage: str = "validation") -> dict:
    """Stage 5 with the generated library, or (library None) the baseline on the foundation alone."""
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    domain = load_domain(stage0)
    client = _client(llm_config, client)
    box = _sandbox(settings, sandbox)
    tasks = domain.tasks(settings["validation_split"], settings["validation_limit"])
    if library is None:
        system = validate.system_prompt(domain, reference_text(domain, None), None)
        io.write_text(out / "system_prompt.txt", system)
        packages, name = [domain.foundation], None
    else:
        system = Path(system_prompt).read_text()
        packages, name = [domain.foundation, Path(library) / domain.library_name], domain.library_name
    records, report = validate.validate(client, box, domain, tasks, system=system, packages=packages, library=name,
                                        params=_params(settings, "program"), workers=settings["workers"])
    report["score"] = report[settings["score"]]
    report["sandbox"] = box.describe()
    io.write_json(out / "validation_report.json", report)
    io.write_jsonl(out / "programs.jsonl", records)
    io.write_jsonl(out / "failures.jsonl", [r for r in records if not r["exact"]])
    if library is not None:
        io.write_json(out / "cycle.json", {"cycle": 0, "score": report["score"], "previous_score": None,
                                           "best_score": report["score"], "failures": report["tasks"] - report["exact"]})
    return _summary(out / f"{'stage5' if library is not None else 'baseline'}_summary.json", client, started, stage,
                    {"tasks": report["tasks"], "score": report["score"], "exact_rate": report["exact_rate"],
                     "mean_f1": report["mean_f1"], "error_classes": report["error_classes"]})


# ---------------------------------------------------------------------------- stage 6
def extension_cycle(cycle: int, stage0: str | Path, previous: str | Path, previous_library: str | Path, out: str | Path,
                    settings: dict, llm_config: dict, client=None, sandbox=None) -> dict:
    """One cycle: `previous` is the folder with the last cycle.json, failures.jsonl (stage5 or cycle n-1)."""
    started = time.perf_counter()
    out, previous = Path(out), Path(previous)
    out.mkdir(parents=True, exist_ok=True)
    domain = load_domain(stage0)
    client = _client(llm_config, client)
    box = _sandbox(settings, sandbox)
    last = io.read_json(previous / "cycle.json")
    failures = io.read_jsonl(previous / "failures.jsonl")
    base_package = Path(previous_library) / domain.library_name
    library_root = out / "library"
    package = library_root / domain.library_name
    clusters = extend.cluster_failures(failures, settings["extension_clusters"], settings["seed"])
    known = set(api.api_names(api.package_api(base_package))) | set(api.api_names(api.package_api(domain.foundation)))
    module_name = f"extension{cycle}"
    module, proposals = extend.propose_extension(
        client, _params(settings, "proposal"), library=domain.library_name, foundation=domain.foundation_name,
        api_text=reference_text(domain, base_package), failures=failures, clusters=clusters, module=module_name,
        known=known)
    results = []
    if module is not None:
        results = _implementer(domain, stage0, settings, client, box).implement([module], package, base=base_package)
    else:
        if library_root.exists():
            shutil.rmtree(library_root)
        shutil.copytree(base_package, package, ignore=shutil.ignore_patterns("__pycache__"))
    reference = reference_text(domain, package)
    io.write_text(out / "dsl_reference.md", f"```python\n{reference}```\n")
    system = validate.system_prompt(domain, reference, domain.library_name)
    io.write_text(out / "system_prompt.txt", system)
    tasks = domain.tasks(settings["validation_split"], settings["validation_limit"])
    records, report = validate.validate(client, box, domain, tasks, system=system,
                                        packages=[domain.foundation, package], library=domain.library_name,
                                        params=_params(settings, "program"), workers=settings["workers"])
    report["score"] = report[settings["score"]]
    io.write_json(out / "validation_report.json", report)
    io.write_jsonl(out / "programs.jsonl", records)
    io.write_jsonl(out / "failures.jsonl", [r for r in records if not r["exact"]])
    io.write_json(out / "extension.json", {"clusters": proposals, "module": module.to_dict() if module else None,
                                           "results": [r.to_dict() for r in results]})
    state = {"cycle": cycle, "score": report["score"], "previous_score": last["score"],
             "best_score": max(report["score"], last["best_score"]), "failures": report["tasks"] - report["exact"],
             "clusters": len(clusters), "proposed": len(module.signatures) if module else 0,
             "accepted": bool(results and results[0].accepted)}
    if "max_extension_cycles" in settings:  # the workflow decides on its current config when it reads the state
        state["decision"] = decide(state, settings)[1]
    io.write_json(out / "cycle.json", state)
    return _summary(out / "summary.json", client, started, "extension", state)


# ---------------------------------------------------------------------------- report
def _usage(path: Path) -> dict:
    record = io.read_json(path)
    usage = record.get("usage") or {}
    return {"calls": usage.get("requests", 0), "prompt_tokens": usage.get("prompt_tokens", 0),
            "completion_tokens": usage.get("completion_tokens", 0), "seconds": record.get("seconds", 0.0)}


def write_report(root: str | Path, cycles: list[str | Path], out: str | Path, settings: dict,
                 extension_path: str | Path | None = None) -> dict:
    """Scores (baseline, stage 5, every cycle), tokens by stage and the cost a hosted model would charge."""
    from difflab.libgen import plots

    root, out = Path(root), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summaries = {"stage1": root / "stage1/stage1_summary.json", "stage2": root / "stage2/stage2_summary.json",
                 "stage3": root / "stage3/stage3_summary.json", "stage4": root / "stage4/stage4_summary.json",
                 "stage5": root / "stage5/stage5_summary.json", "baseline": root / "baseline/baseline_summary.json"}
    usage = {name: _usage(path) for name, path in summaries.items()}
    usage["stage6"] = {k: sum(_usage(Path(c) / "summary.json")[k] for c in cycles)
                       for k in ("calls", "prompt_tokens", "completion_tokens", "seconds")}
    baseline = io.read_json(root / "baseline/validation_report.json")
    stage5 = io.read_json(root / "stage5/validation_report.json")
    rows = [{"step": "baseline (foundation only)", **_scores(baseline)}, {"step": "stage 5 (generated library)", **_scores(stage5)}]
    cycle_states = []
    for c in cycles:
        state = io.read_json(Path(c) / "cycle.json")
        state["decision"] = decide(state, settings)[1]
        cycle_states.append(state)
        rows.append({"step": f"stage 6 cycle {state['cycle']}", **_scores(io.read_json(Path(c) / "validation_report.json"))})
    best = max(rows[1:], key=lambda r: r["score"])
    pricing = settings["cost_estimate"]
    cost = cost_estimate(usage, pricing, scale=_scale(root, settings))
    report = {"score_metric": settings["score"], "rows": rows, "best": best["step"],
              "library_vs_baseline": round(best["score"] - rows[0]["score"], 4), "cycles": cycle_states,
              "tokens_by_stage": usage, "cost_estimate": cost,
              "stage1": {k: io.read_json(summaries["stage1"])[k] for k in ("instructions", "depth", "summaries_per_level", "coverage")}}
    io.write_json(out / "libgen_report.json", report)
    io.write_json(extension_path or root / "stage6/extension_report.json",
                  {"cycles": cycle_states, "best": best["step"], "best_score": best["score"],
                   "stop": cycle_states[-1]["decision"] if cycle_states else "no_cycle"})
    plots.scores_per_step(rows, settings["score"], out / "scores.png")
    return report


def _scores(report: dict) -> dict:
    return {"score": report["score"], "exact_rate": report["exact_rate"], "mean_f1": report["mean_f1"],
            "tasks": report["tasks"], "uses_library": report["uses_library"],
            "mean_loc": report["usability"]["mean_loc"], "reference_mean_loc": report["usability"]["reference_mean_loc"],
            "mean_complexity": report["usability"]["mean_complexity"],
            "reference_mean_complexity": report["usability"]["reference_mean_complexity"]}


def _scale(root: Path, settings: dict) -> dict:
    """How much bigger a full run is than this one, per stage (all training and validation tasks)."""
    domain = load_domain(root / "stage0")
    train_all = len(domain.tasks(settings["train_split"]))
    valid_all = len(domain.tasks(settings["validation_split"]))
    train_used = len(domain.tasks(settings["train_split"], settings["train_limit"]))
    valid_used = len(domain.tasks(settings["validation_split"], settings["validation_limit"]))
    return {"stage1": train_all / train_used, "stage5": valid_all / valid_used, "baseline": valid_all / valid_used,
            "stage6": valid_all / valid_used}


def cost_estimate(usage: dict, pricing: dict, scale: dict | None = None) -> dict:
    """Tokens by stage (as measured, and scaled to all tasks) priced at a hosted model's rates."""
    scale = scale or {}
    stages, total = {}, {"prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0}
    for stage, u in usage.items():
        factor = scale.get(stage, 1.0)
        p, c = round(u["prompt_tokens"] * factor), round(u["completion_tokens"] * factor)
        cost = (p * pricing["prompt_per_1m"] + c * pricing["completion_per_1m"]) / 1e6
        stages[stage] = {"calls": round(u["calls"] * factor), "prompt_tokens": p, "completion_tokens": c,
                         "cost": round(cost, 4), "scale": round(factor, 3)}
        total["prompt_tokens"] += p
        total["completion_tokens"] += c
        total["cost"] += cost
    total["cost"] = round(total["cost"], 4)
    return {"model": pricing["model"], "prompt_per_1m": pricing["prompt_per_1m"],
            "completion_per_1m": pricing["completion_per_1m"], "stages": stages, "total": total,
            "note": "tokens counted by this run's tokenizer; stages 1, 5, 6 and the baseline scaled to every task"}

"""Stage 5: solve held-out tasks with the generated library (or with the foundation alone, the baseline).

For each task the LLM writes a program from the system prompt (domain, library reference) and the
instruction; the program runs in the sandbox through the domain's harness and its result is compared
with the reference: exact match and item F1, plus usability (lines of code, cyclomatic complexity)
against the reference program written on the foundation alone. Every failure keeps its error class:
no_code, a sandbox limit (timeout, memory_limit, process_limit, network_denied, write_denied, ...), the
exception's class, or wrong_result when the program ran but drew something else.
"""

from __future__ import annotations

import collections
import concurrent.futures
import re
from pathlib import Path

from difflab.libgen import prompts, score
from difflab.llm import SamplingParams


def system_prompt(domain, reference: str, library: str | None) -> str:
    if library:
        line = (f"Use the library `{library}`, built on the foundation `{domain.foundation_name}`: "
                f"`from {library} import *` gives you both.")
    else:
        line = f"Use the foundation library `{domain.foundation_name}` (`from {domain.foundation_name} import *`)."
    return prompts.SYSTEM_PROMPT.format(program_kind=domain.program_kind, description=domain.description,
                                        library_line=line, reference=reference.strip())


def validate(client, sandbox, domain, tasks: list[dict], *, system: str, packages: list[Path],
             library: str | None, params: SamplingParams, workers: int = 2) -> tuple[list[dict], dict]:
    """(one record per task, the report) for programs written from `system` and run with `packages`."""
    budget = client.context_tokens - params.max_new_tokens - 32
    system = prompts.fit(client.count_tokens, "{s}", budget - 200, "s", s=system)
    conversations = [[{"role": "system", "content": system},
                      {"role": "user", "content": prompts.PROGRAM.format(instruction=t["instruction"])}] for t in tasks]
    answers = client.chat(conversations, params)
    codes = [prompts.extract_code(a.text) for a in answers]
    codes = [prompts.trim_incomplete(c) if c is not None and a.finish_reason == "length" else c
             for c, a in zip(codes, answers)]

    def run(i: int):
        if codes[i] is None:
            return None
        return sandbox.run_program(domain.harness, codes[i], tasks[i], packages)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(run, range(len(tasks))))
    records = []
    for task, answer, code, result in zip(tasks, answers, codes, results):
        record = {"id": task["id"], "instruction": task["instruction"], "program": code, "answer": answer.text}
        if result is None:
            record.update(error_class="no_code", message="the answer holds no python code block", state=None)
        elif not result.ok:
            record.update(error_class=result.error_class, message=result.message.strip()[-1500:], state=None)
        else:
            record.update(error_class="", message="", state=result.state)
        record.update(score.compare_states(task["state"], record["state"]))
        if record["error_class"] == "" and not record["exact"]:
            record["error_class"] = "wrong_result"
        record["uses_library"] = bool(library and code and re.search(rf"\b(from|import)\s+{library}\b", code))
        use, ref = score.usability(code) if code else {"loc": None, "complexity": None}, score.usability(task["solution"])
        record.update(loc=use["loc"], complexity=use["complexity"], reference_loc=ref["loc"],
                      reference_complexity=ref["complexity"])
        records.append(record)
    return records, report(records, library)


def report(records: list[dict], library: str | None) -> dict:
    n = len(records)
    solved = [r for r in records if r["exact"]]
    ran = [r for r in records if r["error_class"] in ("", "wrong_result")]
    return {
        "library": library,
        "tasks": n,
        "exact": len(solved),
        "exact_rate": round(len(solved) / n, 4) if n else 0.0,
        "mean_f1": score.mean(r["f1"] for r in records) or 0.0,
        "ran": len(ran),
        "uses_library": sum(r["uses_library"] for r in records),
        "error_classes": dict(collections.Counter(r["error_class"] or "solved" for r in records).most_common()),
        "usability": {
            "programs_scored": sum(r["loc"] is not None for r in records),
            "mean_loc": score.mean(r["loc"] for r in records),
            "mean_complexity": score.mean(r["complexity"] for r in records),
            "reference_mean_loc": score.mean(r["reference_loc"] for r in records),
            "reference_mean_complexity": score.mean(r["reference_complexity"] for r in records),
            "solved_mean_loc": score.mean(r["loc"] for r in solved),
            "solved_reference_mean_loc": score.mean(r["reference_loc"] for r in solved),
        },
    }

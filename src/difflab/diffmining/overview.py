"""The agent's view of a run: saved orderings -> one compact JSON message, and what the LLM makes of it.

    get_overview(orderings, budget)   token groups per (anonymized) dataset and ordering, the whole
                                      message within a token budget split evenly across the groups
                                      (counted with tiktoken's cl100k encoding, as an LLM sees the JSON)
    ask(overview, question, client)   the overview and a question to the configured LLM client
    grade_relevance(...)              optional LLM judge: is each top token relevant to a description?
"""

from __future__ import annotations

import json
from pathlib import Path

from difflab import io, models
from difflab.diffmining.orderings import read_orderings
from difflab.errors import DifflabError
from difflab.llm import relevance
from difflab.llm.types import SamplingParams

SYSTEM_PROMPT = (
    "You analyse how a language model changed when it was finetuned. You are given, for several datasets "
    "(ds1, ds2, ...), ranked lists of tokens whose predicted probability the finetune raised the most "
    "(top_k_occurring: % of positions where the token is among the most raised; fraction_positive_diff: "
    "share of positions where it was raised at all; nmf topic_i: groups of tokens raised together). "
    "Answer the question from this evidence, briefly and concretely."
)


def _count_tokens(obj) -> int:
    return len(models.gpt_encoding().encode(json.dumps(obj, ensure_ascii=False)))


def _significant(value: float) -> float:
    """Three significant digits: a percentage reads 37.5, an NMF weight 0.000153 (not 0.0)."""
    return float(f"{value:.3g}")


def _item(entry: dict) -> list:
    """One token of the message: [token, ordering value, average logit diff]."""
    return [entry["token_str"], _significant(entry["ordering_value"]), _significant(entry["avg_logit_diff"])]


def get_overview(orderings_files: dict[tuple[str, str], str | Path], token_budget: int = 1500,
                 datasets: list[str] | None = None) -> dict:
    """One JSON-able message from orderings files keyed by (ordering_type, dataset).

    The whole message the agent gets stays within `token_budget` (cl100k tokens): its structure is
    counted first (a budget below it is an error), each (dataset, ordering) group lists its best tokens
    as [token, value, avg_diff] rows within an equal share of the rest, and what the share estimates
    leave unspent goes, one row at a time, to the shortest lists. Dataset names become ds1, ds2, ... in the
    order given (the mapping is returned separately in `_dataset_names`, never sent to the LLM).
    """
    if not orderings_files:
        raise DifflabError("overview: no orderings to summarise")
    names = datasets or sorted({dataset for _, dataset in orderings_files})
    alias = {name: f"ds{i}" for i, name in enumerate(names, 1)}
    groups = []
    for (ordering_type, dataset), path in sorted(orderings_files.items(), key=lambda kv: (names.index(kv[0][1]), kv[0][0])):
        data = read_orderings(path)
        for ordering in data["orderings"]:
            groups.append((dataset, ordering_type, ordering, data))
    # The message's structure (keys, labels, counts) is counted first; what is left of the budget is
    # split evenly across the groups, and each lists its best tokens until its share is spent.
    message: dict = {"columns": ["token", "ordering_value", "avg_logit_diff"], "datasets": {}}
    lists = []
    for dataset, ordering_type, ordering, data in groups:
        ds = message["datasets"].setdefault(alias[dataset], {"positions": data["total_positions"], "top_k": data["k"], "orderings": {}})
        label = ordering_type if ordering["ordering_id"] == "global" else f"{ordering_type}:{ordering['ordering_id']}"
        ds["orderings"][label] = []
        lists.append((ds["orderings"][label], ordering["tokens"]))
    message["token_budget"] = message["tokens_used"] = token_budget  # as many digits as the final count, or more
    structure = _count_tokens(message)
    if structure > token_budget:
        raise DifflabError(f"overview: token_budget {token_budget} is below the {structure} tokens the message's "
                           f"structure alone takes ({len(groups)} dataset/ordering groups); raise diffmining.overview.token_budget")
    share = (token_budget - structure) // max(len(groups), 1)
    for tokens, entries in lists:
        used = 0
        for entry in entries:
            item = _item(entry)
            cost = _count_tokens(item) + 1  # and its separator
            if used + cost > share:
                break
            tokens.append(item)
            used += cost
    total = _count_tokens(message)
    while total > token_budget:  # the per-item counts are estimates of the joined text: trim the longest lists
        max(lists, key=lambda pair: len(pair[0]))[0].pop()
        total = _count_tokens(message)
    open_lists = [pair for pair in lists if len(pair[0]) < len(pair[1])]
    while open_lists:  # what the estimates left unspent: one more token for the shortest list while it fits
        tokens, entries = min(open_lists, key=lambda pair: len(pair[0]))
        entry = entries[len(tokens)]
        tokens.append(_item(entry))
        count = _count_tokens(message)
        if count > token_budget:
            tokens.pop()
            open_lists.remove((tokens, entries))
        else:
            total = count
            if len(tokens) == len(entries):
                open_lists.remove((tokens, entries))
    message["tokens_used"] = total
    return {**message, "_dataset_names": alias}


def write_overview(orderings_files: dict[tuple[str, str], str], out_path: str | Path, token_budget: int,
                   datasets: list[str]) -> dict:
    """Rule diffmining_overview."""
    overview = get_overview(orderings_files, token_budget, datasets)
    io.write_json(out_path, overview)
    print(f"overview: {overview['tokens_used']} tokens (budget {token_budget})")
    return overview


def agent_message(overview: dict) -> str:
    """The JSON text sent to the agent (without the real dataset names)."""
    return json.dumps({k: v for k, v in overview.items() if not k.startswith("_")}, ensure_ascii=False)


def ask(overview: dict, question: str, client, params: SamplingParams | None = None) -> dict:
    """Send the overview and a question; returns {question, answer, ...}."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": f"Evidence:\n{agent_message(overview)}\n\nQuestion: {question}"}]
    completion = client.chat([messages], params)[0]
    return {"question": question, "answer": completion.text.strip(), "finish_reason": completion.finish_reason,
            "prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
            "backend": client.backend.describe()}


def ask_and_save(config: dict, overview_path: str | Path, out_path: str | Path, question: str) -> dict:
    """Rule diffmining_ask: the configured LLM client answers the question from the overview."""
    from difflab.llm.client import client_from_config

    client = client_from_config(config)
    params = SamplingParams.from_config(config["sampling"], max_new_tokens=config["diffmining"]["ask"]["max_new_tokens"])
    result = ask(io.read_json(overview_path), question, client, params)
    io.write_json(out_path, {**result, "usage": client.usage.to_dict()})
    print(f"Q: {question}\nA: {result['answer']}")
    return result


# --------------------------------------------------------------------------- relevance grading

def grade_relevance(orderings_path: str | Path, description: str, client, *, top_n: int = 20) -> dict:
    """Label each ordering's top tokens relevant or not to `description` with the LLM judge
    (difflab.llm.relevance: the scoreboard's judge asks the same questions)."""
    data = read_orderings(orderings_path)
    result = {"description": description, "ordering_type": data["ordering_type"], "dataset": data["dataset"],
              "orderings": {}}
    for ordering in data["orderings"]:
        tokens = ordering["tokens"][:top_n]
        answers = relevance.judge_tokens(client, description, [e["token_str"] for e in tokens])
        labels = [{"token_id": e["token_id"], "token_str": e["token_str"], "relevant": relevance.parse_yes_no(a.text),
                   "raw": a.text.strip()[:40]} for e, a in zip(tokens, answers)]
        graded = [x for x in labels if x["relevant"] is not None]
        result["orderings"][ordering["ordering_id"]] = {
            "tokens": labels, "n_graded": len(graded),
            "fraction_relevant": (sum(x["relevant"] for x in graded) / len(graded)) if graded else None}
    return result


def grade_and_save(config: dict, orderings_path: str | Path, out_path: str | Path, description: str, top_n: int) -> dict:
    """Rule diffmining_relevance."""
    from difflab.llm.client import client_from_config

    result = grade_relevance(orderings_path, description, client_from_config(config), top_n=top_n)
    io.write_json(out_path, result)
    return result

"""What to ask both models: the initial prompts, the prompts targeted at chosen clusters, and the
batched generation of each prompt by the base and the finetuned model.

Initial prompts mix a prompt set (JSONL `{"prompt"}`) with a category x topic grid ("Explain how" x
"volcanoes"), shuffled with the seed. A targeted prompt is built from a chosen cluster's own members:
the prompt of a member and, as a prefill of the answer, that member's first `prefix_words` words, so
both models continue the same opening of what the cluster is about. Every request has its own sample
index, so a prompt asked again is a new sample (and a rerun reads every answer from the cache).
"""

from __future__ import annotations

import itertools
import random

from difflab import io
from difflab.errors import DifflabError
from difflab.llm import Request


def initial_prompts(prompt_file: str | None, categories: list[str], topics: list[str], n: int, seed: int) -> list[dict]:
    pool = []
    if prompt_file:
        pool += [{"prompt": r["prompt"], "source": "prompt_set"}
                 for r in io.read_jsonl(prompt_file, required=["prompt"])]
    pool += [{"prompt": f"{c} {t}.", "source": "category_x_topic"} for c, t in itertools.product(categories, topics)]
    if not pool:
        raise DifflabError("active: no initial prompts (active.prompts is empty and there are no categories x topics)")
    rng = random.Random(seed)
    rng.shuffle(pool)
    return [{**pool[i % len(pool)], "target_cluster": None, "reason": "initial", "prefix": ""} for i in range(n)]


def targeted_prompts(areas: list[dict], members: dict[int, list[dict]], prefix_words: int, seed: int) -> list[dict]:
    """`samples` prompts per area from the area's cluster members ({prompt, text}), round-robin."""
    rng = random.Random(seed)
    out = []
    for area in areas:
        pool = list(members.get(area["cluster"], []))
        if not pool:
            continue
        rng.shuffle(pool)
        for j in range(area["samples"]):
            member = pool[j % len(pool)]
            prefix = " ".join(member["text"].split()[:prefix_words]) if prefix_words else ""
            out.append({"prompt": member["prompt"], "prefix": prefix, "source": "cluster_member",
                        "target_cluster": area["cluster"], "reason": "+".join(area["reasons"])})
    return out


def generate_pairs(prompts: list[dict], clients: dict, params, iteration: int, prefill: bool = True) -> list[dict]:
    """Each prompt answered by both models ({'base': client, 'finetuned': client}) -> text rows."""
    rows = []
    requests = [Request.chat([{"role": "user", "content": p["prompt"]}], sample_index=iteration * 1_000_000 + j,
                             prefill=p["prefix"] if prefill else "") for j, p in enumerate(prompts)]
    for model, client in clients.items():
        completions = client.complete(requests, params)
        for j, (p, c) in enumerate(zip(prompts, completions)):
            prefix = p["prefix"] if prefill else ""
            rows.append({"id": f"i{iteration}-{j}-{model}", "pair": f"i{iteration}-{j}", "model": model,
                         "iteration": iteration, "prompt": p["prompt"], "prefix": prefix,
                         "text": (prefix + (" " if prefix and not c.text.startswith((" ", "\n")) else "") + c.text).strip(),
                         "completion": c.text,  # what the model wrote (the text less the prefill)
                         "completion_tokens": c.completion_tokens, "source": p["source"],
                         "target_cluster": p["target_cluster"], "reason": p["reason"]})
    return rows

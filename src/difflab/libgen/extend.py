"""Stage 6: error-driven extension, one cycle at a time.

A cycle clusters the previous cycle's failures (TF-IDF over instruction, error class and message,
KMeans), asks the LLM per cluster for new functions, implements them as one new module on top of the
previous library (same repair loop as stage 3), regenerates the reference and system prompt, and
re-validates. `settings.decide` says whether another cycle runs: not past `max_extension_cycles`, failures
left, and (after the first cycle) the score improved by more than `min_improvement`.
"""

from __future__ import annotations

import numpy as np

from difflab.libgen import prompts
from difflab.libgen.api import Module, parse_proposal


def cluster_failures(failures: list[dict], n_clusters: int, seed: int = 0) -> list[list[int]]:
    """Groups of failure indices, largest first."""
    if not failures:
        return []
    k = max(1, min(n_clusters, len(failures)))
    if k == 1:
        return [list(range(len(failures)))]
    from sklearn.cluster import KMeans  # here, not at the top: scikit-learn costs ~2 s to import, and
    from sklearn.feature_extraction.text import TfidfVectorizer  # only this stage of libgen uses it

    texts = [f"{f['instruction']} {f['error_class']} {(f.get('message') or '').splitlines()[0] if f.get('message') else ''}"
             for f in failures]
    matrix = TfidfVectorizer(min_df=1).fit_transform(texts)
    k = min(k, matrix.shape[0], max(1, len({t for t in texts})))
    labels = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(matrix) if k > 1 else np.zeros(len(texts))
    groups: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(int(label), []).append(i)
    return sorted(groups.values(), key=lambda g: (-len(g), g[0]))


def propose_extension(client, params, *, library: str, foundation: str, api_text: str, failures: list[dict],
                      clusters: list[list[int]], module: str, known: set[str], examples: int = 5) -> tuple[Module | None, list[dict]]:
    """One new module from every cluster's proposal (functions the library already has are dropped)."""
    budget = client.context_tokens - params.max_new_tokens - 32
    asks = []
    for group in clusters:
        shown = "\n".join(f"- {failures[i]['instruction']} (failed: {failures[i]['error_class']}"
                          + (f": {failures[i]['message'].splitlines()[0][:160]}" if failures[i].get("message") else "")
                          + ")" for i in group[:examples])
        asks.append(prompts.fit(client.count_tokens, prompts.EXTEND, budget, "api", library=library,
                                foundation=foundation, api=api_text, failures=shown, module=module))
    conversations = [[{"role": "system", "content": prompts.SYSTEM}, {"role": "user", "content": p}] for p in asks]
    answers = client.chat(conversations, params) if conversations else []
    signatures, seen, records = [], set(known), []
    for group, answer in zip(clusters, answers):
        parsed = parse_proposal(answer.text)
        new = [s for m in parsed for s in m.signatures if s.name not in seen]
        seen.update(s.name for s in new)
        signatures += new
        records.append({"failures": len(group), "ids": [failures[i]["id"] for i in group], "answer": answer.text,
                        "proposed": [s.text for s in new]})
    if not signatures:
        return None, records
    text = "\n\n".join(r["answer"] for r in records)[:3000]
    return Module(module, signatures, text), records

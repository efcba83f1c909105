"""Score each hypothesis on held-out text pairs it never saw, with a judge that reads the hypothesis.

A held-out pair is a finetuned and a base text generated for the same prompt. A judge says which of
the two the hypothesis describes; its pairwise accuracy is tested against chance (0.5) with a one-sided
exact binomial test, reported with a Wilson 95% interval, and the p-values of all hypotheses are
corrected together (Benjamini-Hochberg). Only hypotheses significant after correction are validated.

Judges:
* `embedding` (default, cheap): the finetuned text wins when it is closer (cosine) to the hypothesis
  sentence than the base text is; exact ties are dropped.
* `llm`: the LLM client is shown the hypothesis and the two texts in a seeded random order and asked
  which one the hypothesised model wrote; an answer that is neither A nor B is dropped.
"""

from __future__ import annotations

import random
import re

import numpy as np
from scipy import stats


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def embedding_votes(hypotheses: list[str], finetuned: list[str], base: list[str], embed) -> np.ndarray:
    """[h, pairs] +1 finetuned closer, -1 base closer, 0 tie; `embed(texts)` -> unit vectors."""
    h = np.asarray(embed(hypotheses), dtype=np.float64)
    f = np.asarray(embed(finetuned), dtype=np.float64)
    b = np.asarray(embed(base), dtype=np.float64)
    return np.sign(h @ f.T - h @ b.T)


def judge_prompt(hypothesis: str, first: str, second: str) -> str:
    return (f"Hypothesis about a model: {hypothesis}\n\nText A:\n{first.strip()[:600]}\n\nText B:\n{second.strip()[:600]}\n\n"
            "Which text was written by the model the hypothesis describes? Answer with one letter, A or B.")


def llm_votes(hypotheses: list[str], finetuned: list[str], base: list[str], client, params, seed: int = 0) -> np.ndarray:
    rng = random.Random(seed)
    order = [[rng.random() < 0.5 for _ in finetuned] for _ in hypotheses]  # True: finetuned shown first
    prompts = []
    for h, flips in zip(hypotheses, order):
        for f, b, ft_first in zip(finetuned, base, flips):
            prompts.append([{"role": "user", "content": judge_prompt(h, *(f, b) if ft_first else (b, f))}])
    answers = [c.text for c in client.chat(prompts, params)] if prompts else []
    votes = np.zeros((len(hypotheses), len(finetuned)))
    for k, answer in enumerate(answers):
        i, j = divmod(k, len(finetuned))
        match = re.search(r"\b([AB])\b", answer.strip().upper())
        if match:
            said_first = match.group(1) == "A"
            votes[i, j] = 1 if said_first == order[i][j] else -1
    return votes


def score(votes: np.ndarray, alpha: float = 0.05) -> list[dict]:
    """Per hypothesis: accuracy, Wilson CI, binomial p, Benjamini-Hochberg q, validated."""
    rows = []
    for v in np.atleast_2d(votes):
        wins, n = int((v > 0).sum()), int((v != 0).sum())
        p = float(stats.binomtest(wins, n, 0.5, alternative="greater").pvalue) if n else 1.0
        low, high = wilson(wins, n)
        rows.append({"pairs": n, "wins": wins, "accuracy": round(wins / n, 4) if n else None,
                     "ci95": [round(low, 4), round(high, 4)], "p_value": p})
    if rows:
        q = stats.false_discovery_control([r["p_value"] for r in rows], method="bh")
        for r, qi in zip(rows, np.atleast_1d(q)):
            r["q_value"] = float(qi)
            r["validated"] = bool(qi < alpha and r["accuracy"] is not None and r["accuracy"] > 0.5)
    return rows

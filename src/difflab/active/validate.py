"""Score each hypothesis on held-out text pairs it never saw, with a judge that reads the hypothesis.

A held-out pair is a finetuned and a base text generated for the same prompt. A judge says which of
the two the hypothesis describes; its pairwise accuracy is tested against chance (0.5) with a one-sided
exact binomial test, reported with a Wilson 95% interval, and the p-values of all hypotheses are
corrected together (Benjamini-Hochberg). Only hypotheses significant after correction are validated.

Judges:
* `embedding` (default, cheap): for a pair (f, b) the hypothesis h's margin is cos(h, f) - cos(h, b).
  A margin alone is biased: when the finetuned model is simply more fluent (or more on-topic for any
  prompt), every sentence is closer to its texts, so an unrelated hypothesis would pass. So the same
  margin is computed for reference statements about unrelated topics, and h wins the pair when its
  margin beats their median: h must explain the pair better than a statement that is not about the
  difference. Exact ties are dropped.
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


REFERENCES = [f"The finetuned model talks more about {topic} than the base model." for topic in (
    "sports and athletes", "music and songs", "politics and elections", "cars and driving", "animals and pets",
    "computers and software", "medicine and hospitals", "history and wars", "travel and hotels",
    "fashion and clothes", "the weather and seasons", "movies and actors")]


def embedding_votes(hypotheses: list[str], finetuned: list[str], base: list[str], embed,
                    references: list[str] = REFERENCES) -> np.ndarray:
    """[h, pairs] +1 h explains the pair better than the references' median, -1 worse, 0 tie;
    `embed(texts)` -> unit vectors."""
    h = np.asarray(embed(hypotheses), dtype=np.float64)
    r = np.asarray(embed(list(references)), dtype=np.float64)
    diff = np.asarray(embed(finetuned), dtype=np.float64) - np.asarray(embed(base), dtype=np.float64)
    return np.sign(h @ diff.T - np.median(r @ diff.T, axis=0, keepdims=True))


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

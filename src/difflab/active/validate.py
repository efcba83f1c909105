"""Score each hypothesis on held-out text pairs it never saw, with a judge that reads the hypothesis.

A held-out pair is a finetuned and a base text generated for the same prompt. A judge says which of
the two the hypothesis describes; its pairwise accuracy is tested against chance (0.5) with a one-sided
exact binomial test, reported with a Wilson 95% interval, and the p-values of all hypotheses are
corrected together (Benjamini-Hochberg). Only hypotheses significant after correction are validated.

Judges:
* `embedding` (default, cheap): for a pair (f, b) the hypothesis h's margin is cos(h, f) - cos(h, b).
  A margin alone is biased: when the finetuned model is simply more fluent (or more on-topic for any
  prompt), every sentence is closer to its texts, so an unrelated hypothesis would pass. So the same
  margin is computed for ~200 reference statements about unrelated topics (data/reference_topics.txt),
  and h wins the pair when its margin beats their median. Exact ties are dropped.
  The pairs share one systematic shift, so an unrelated sentence that happens to lie along it wins
  most pairs: the pairwise test alone gave p < 0.05 to 34% of random unrelated sentences in a
  simulation (tests/test_active.py; 2.3% with the rank). So h must also stand out among the statements: its mean margin
  is ranked among the references' (p = (1 + references at or above it) / (1 + references)), and its
  p-value is the larger of the two (both must hold).
* `llm`: the LLM client is shown the hypothesis and the two texts in a seeded random order (finetuned
  first in half of the pairs, so a judge that answers by position scores 0.5) and asked
  which one the hypothesised model wrote; an answer that is neither A nor B is dropped. It has no
  reference statements (each would cost a call per pair): a judge that favours the finetuned model's
  texts whatever the hypothesis says passes every hypothesis; the control hypothesis passing shows it.
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


def reference_statements() -> list[str]:
    """The embedding judge's reference statements, one per topic of data/reference_topics.txt."""
    from importlib import resources

    text = resources.files("difflab.active").joinpath("data/reference_topics.txt").read_text(encoding="utf-8")
    topics = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return [f"The finetuned model talks more about {topic} than the base model." for topic in topics]


def embedding_votes(hypotheses: list[str], finetuned: list[str], base: list[str], embed,
                    references: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """([h, pairs] votes: +1 h explains the pair better than the references' median, -1 worse, 0 tie;
    [h] rank p-values of each h's mean margin among the references'). `embed(texts)` -> unit vectors."""
    references = reference_statements() if references is None else list(references)
    h = np.asarray(embed(hypotheses), dtype=np.float64)
    r = np.asarray(embed(references), dtype=np.float64)
    diff = np.asarray(embed(finetuned), dtype=np.float64) - np.asarray(embed(base), dtype=np.float64)
    h_margin, r_margin = h @ diff.T, r @ diff.T
    votes = np.sign(h_margin - np.median(r_margin, axis=0, keepdims=True))
    above = (r_margin.mean(axis=1)[None, :] >= h_margin.mean(axis=1)[:, None]).sum(axis=1)
    return votes, (1 + above) / (1 + len(references))


def judge_prompt(hypothesis: str, first: str, second: str) -> str:
    return (f"Hypothesis about a model: {hypothesis}\n\nText A:\n{first.strip()[:600]}\n\nText B:\n{second.strip()[:600]}\n\n"
            "Which text was written by the model the hypothesis describes? Answer with one letter, A or B.")


def llm_votes(hypotheses: list[str], finetuned: list[str], base: list[str], client, params, seed: int = 0) -> np.ndarray:
    rng = random.Random(seed)
    order = []  # True: finetuned shown first; in half of the pairs exactly (odd counts: one extra at random), so
    for _ in hypotheses:  # a judge that always answers by position scores 0.5, not a chance order imbalance
        flips = [j < len(finetuned) // 2 for j in range(len(finetuned))]
        if len(finetuned) % 2:
            flips[-1] = rng.random() < 0.5
        rng.shuffle(flips)
        order.append(flips)
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


def score(votes: np.ndarray, alpha: float = 0.05, rank_p: np.ndarray | None = None) -> list[dict]:
    """Per hypothesis: accuracy, Wilson CI, binomial p, Benjamini-Hochberg q, validated. With `rank_p`
    (the embedding judge's rank among reference statements) the p-value is the larger of the two."""
    rows = []
    votes = np.atleast_2d(votes)
    for i, v in enumerate(votes):
        wins, n = int((v > 0).sum()), int((v != 0).sum())
        p = float(stats.binomtest(wins, n, 0.5, alternative="greater").pvalue) if n else 1.0
        low, high = wilson(wins, n)
        row = {"pairs": n, "wins": wins, "accuracy": round(wins / n, 4) if n else None,
               "ci95": [round(low, 4), round(high, 4)], "p_pairs": p, "p_value": p}
        if rank_p is not None:
            row["p_rank"] = float(rank_p[i])
            row["p_value"] = max(p, float(rank_p[i]))
        rows.append(row)
    if rows:
        q = stats.false_discovery_control([r["p_value"] for r in rows], method="bh")
        for r, qi in zip(rows, np.atleast_1d(q)):
            r["q_value"] = float(qi)
            r["validated"] = bool(qi < alpha and r["accuracy"] is not None and r["accuracy"] > 0.5)
    return rows

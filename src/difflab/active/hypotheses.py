"""One-sentence hypotheses of how the finetuned model differs, per high-divergence cluster.

Grounding: the cluster's most distinctive words, by the weighted log-odds ratio with an informative
Dirichlet prior (Monroe, Colaresi & Quinn 2008, "Fightin' Words"). For word w with counts y_f, y_b in
the finetuned and base texts of the cluster (totals n_f, n_b) and prior a_w = a0 x (w's share of all
texts, both models, all clusters):

    delta_w = log((y_f + a_w) / (n_f + a0 - y_f - a_w)) - log((y_b + a_w) / (n_b + a0 - y_b - a_w))
    z_w     = delta_w / sqrt(1 / (y_f + a_w) + 1 / (y_b + a_w))

Words with the largest z are what the finetuned model says more. The LLM (through difflab.llm) reads
those words next to contrasting samples and writes one sentence; when its answer is empty, off-format
(not one sentence of 6-60 words) or unrelated (it names none of the top words), the extractive
hypothesis built from the words is used instead, and `source` records which.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

WORD = re.compile(r"[a-z][a-z'-]{2,}")


def words(text: str) -> list[str]:
    # imported here: scikit-learn costs ~1.5 s to import, which every active job would pay
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return [w for w in WORD.findall(text.lower()) if w not in ENGLISH_STOP_WORDS]


def weighted_log_odds(finetuned: list[str], base: list[str], background: list[str], *, prior_scale: float = 100.0,
                      top: int = 15, min_count: int = 2) -> list[dict]:
    """The `top` words the finetuned texts over-use relative to the base texts, with z-scores."""
    y_f = Counter(w for t in finetuned for w in words(t))
    y_b = Counter(w for t in base for w in words(t))
    bg = Counter(w for t in background for w in words(t))
    bg.update(y_f + y_b)  # every scored word has a prior
    vocab = sorted(w for w in set(y_f) | set(y_b) if y_f[w] + y_b[w] >= min_count)
    if not vocab:
        return []
    total_bg = sum(bg.values())
    a = np.array([prior_scale * bg[w] / total_bg for w in vocab])
    f = np.array([y_f[w] for w in vocab], dtype=np.float64)
    b = np.array([y_b[w] for w in vocab], dtype=np.float64)
    n_f, n_b, a0 = max(f.sum(), 1.0), max(b.sum(), 1.0), prior_scale
    delta = np.log((f + a) / (n_f + a0 - f - a)) - np.log((b + a) / (n_b + a0 - b - a))
    z = delta / np.sqrt(1.0 / (f + a) + 1.0 / (b + a))
    order = np.argsort(-z, kind="stable")[:top]
    return [{"word": vocab[i], "z": round(float(z[i]), 3), "finetuned": int(f[i]), "base": int(b[i])}
            for i in order if z[i] > 0]


def extractive_hypothesis(distinctive: list[dict], n_words: int = 4) -> str:
    top = [d["word"] for d in distinctive[:n_words]]
    if not top:
        return "The finetuned model's texts in this cluster differ from the base model's in no word it repeats."
    return f"The finetuned model talks more about {', '.join(top[:-1])}{' and ' if len(top) > 1 else ''}{top[-1]} than the base model."


def hypothesis_prompt(distinctive: list[dict], finetuned: list[str], base: list[str], n_words: int = 8) -> str:
    listed = ", ".join(d["word"] for d in distinctive[:n_words]) or "(none)"
    ft = "\n".join(f"- {t.strip()[:300]}" for t in finetuned)
    bs = "\n".join(f"- {t.strip()[:300]}" for t in base)
    return (f"Two AI models answered the same prompts. Texts from model B:\n{ft}\n\nTexts from model A:\n{bs}\n\n"
            f"Words model B uses much more than model A: {listed}.\n"
            "In one sentence starting with 'Model B', say how model B differs from model A.")


def check_answer(answer: str, distinctive: list[dict], n_words: int = 8) -> tuple[str | None, str]:
    """(cleaned sentence or None, why it was refused)."""
    text = " ".join((answer or "").split())
    if not text:
        return None, "empty"
    sentence = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0].strip()
    n = len(sentence.split())
    if n < 6 or n > 60:
        return None, f"off-format ({n} words)"
    said = set(words(sentence))
    stems = {w[:5] for w in said}
    if not any(d["word"] in said or d["word"][:5] in stems for d in distinctive[:n_words]):
        return None, "unrelated (names none of the distinctive words)"
    sentence = re.sub(r"^model b\b", "The finetuned model", sentence, flags=re.I)
    sentence = re.sub(r"\bmodel a\b", "the base model", sentence, flags=re.I)
    return sentence, ""


def write_hypotheses(clusters: list[dict], client=None, params=None) -> list[dict]:
    """One hypothesis per cluster record {cluster, distinctive, finetuned_samples, base_samples, ...}."""
    answers: list[str] = [""] * len(clusters)
    if client is not None and clusters:
        prompts = [[{"role": "user", "content": hypothesis_prompt(c["distinctive"], c["finetuned_samples"],
                                                                   c["base_samples"])}] for c in clusters]
        answers = [completion.text for completion in client.chat(prompts, params)]
    out = []
    for record, answer in zip(clusters, answers):
        sentence, refused = check_answer(answer, record["distinctive"]) if client is not None else (None, "no LLM")
        out.append({**{k: v for k, v in record.items() if k not in ("finetuned_samples", "base_samples")},
                    "hypothesis": sentence or extractive_hypothesis(record["distinctive"]),
                    "source": "llm" if sentence else "extractive",
                    "llm_answer": answer, "llm_refused": refused if not sentence else ""})
    return out

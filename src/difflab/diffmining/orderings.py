"""Orderings: ranked token lists built from a dataset's Reductions.

    top_k_occurring          % of positions where the token is among the top-K positive diffs
    fraction_positive_diff   share of positions where the token's diff is > 0
    nmf                      one ordering per topic of the co-occurrence NMF (see nmf.py)

Every entry is {token_id, token_str, ordering_value, avg_logit_diff, count_positive, count_negative}
where count_positive / count_negative are the positions where the token was in the top-K positive /
negative set. Token strings are decoded readably (byte-level BPE markers become spaces/newlines);
optionally lower-cased, pure-punctuation tokens dropped and tokens with the same normalized string
consolidated into the best-ranked one (the others listed in `merged_token_ids`).
"""

from __future__ import annotations

import string
import unicodedata
from pathlib import Path

import numpy as np

from difflab import io, models
from difflab.diffmining.reductions import Reductions
from difflab.errors import DifflabError

ORDERING_TYPES = ("top_k_occurring", "fraction_positive_diff", "nmf")


def decode_token(decoder: models.TokenDecoder, token_id: int) -> str:
    """A token as readable text: its bytes decoded, so 'Ġoven' reads ' oven' and 'Ċ' a newline."""
    return decoder.decode([int(token_id)])


def is_punctuation(text: str) -> bool:
    """True for tokens made only of punctuation and whitespace (nothing to read): ASCII punctuation
    and symbols (string.punctuation, as '$' or '+') and Unicode punctuation (category P). Other symbols
    carry meaning and stay: emoji, currency such as '€', mathematical signs such as '∑'."""
    return all(ch in string.punctuation or unicodedata.category(ch)[0] == "P" for ch in text.strip())


def normalized(text: str, lowercase: bool) -> str:
    """The string consolidation compares and entries show: stripped of surrounding whitespace (' The'
    and 'The' are one word), lower-cased if asked. A whitespace-only token (' ', a newline) keeps its
    own text, so that different whitespace tokens stay apart."""
    text = text.strip() or text
    return text.lower() if lowercase else text


def make_entries(token_ids, values, red: Reductions, decoder, *, limit: int,
                 lowercase: bool = True, filter_punctuation: bool = True, consolidate: bool = True) -> list[dict]:
    """Ranked entries (value descending, lower id first on ties), normalized and cut to `limit`."""
    order = sorted(range(len(token_ids)), key=lambda i: (-float(values[i]), int(token_ids[i])))
    avg = red.avg_logit_diff
    entries: list[dict] = []
    by_key: dict[str, dict] = {}
    for i in order:
        tid = int(token_ids[i])
        text = decode_token(decoder, tid)
        if filter_punctuation and is_punctuation(text):
            continue
        key = normalized(text, lowercase)
        if consolidate and "\ufffd" not in text and key in by_key:  # (a partial UTF-8 byte reads '\ufffd':
            # different bytes look alike, so such tokens are never merged)
            by_key[key]["merged_token_ids"].append(tid)
            continue
        entry = {"token_id": tid, "token_str": key if lowercase else text, "ordering_value": float(values[i]),
                 "avg_logit_diff": float(avg[tid]), "count_positive": int(red.topk_pos_counts[tid]),
                 "count_negative": int(red.topk_neg_counts[tid]), "merged_token_ids": []}
        by_key[key] = entry
        entries.append(entry)
        if len(entries) >= limit:
            break
    return entries


def top_k_occurring(red: Reductions) -> tuple[np.ndarray, np.ndarray]:
    """Tokens that ever entered a top-K positive set, valued by % of positions they did."""
    ids = np.flatnonzero(red.topk_pos_counts)
    return ids, red.topk_pos_counts[ids].astype(np.float64) / red.total_positions * 100


def fraction_positive_diff(red: Reductions) -> tuple[np.ndarray, np.ndarray]:
    """Tokens with any positive diff, valued by the share of positions where their diff was > 0."""
    ids = np.flatnonzero(red.count_positive)
    return ids, red.count_positive[ids].astype(np.float64) / red.total_positions


def compute_orderings(red: Reductions, decoder, ordering_type: str, options: dict, nmf_options: dict | None = None) -> list[dict]:
    """The orderings of one type for one dataset: [{ordering_id, display_label, tokens, metadata}]."""
    entry_options = dict(limit=options["max_tokens"], lowercase=options["lowercase"],
                         filter_punctuation=options["filter_punctuation"], consolidate=options["consolidate"])
    if ordering_type == "top_k_occurring":
        ids, values = top_k_occurring(red)
        return [{"ordering_id": "global", "display_label": f"Top-{red.k} occurring",
                 "tokens": make_entries(ids, values, red, decoder, **entry_options),
                 "metadata": {"value": "percent of positions in the top-K positive diffs"}}]
    if ordering_type == "fraction_positive_diff":
        ids, values = fraction_positive_diff(red)
        return [{"ordering_id": "global", "display_label": "Fraction of positions with positive diff",
                 "tokens": make_entries(ids, values, red, decoder, **entry_options),
                 "metadata": {"value": "share of positions with diff > 0"}}]
    if ordering_type == "nmf":
        from difflab.diffmining import nmf

        token_ids, weights, info = nmf.nmf_topics(red, **(nmf_options or {}))
        return [{"ordering_id": f"topic_{t}", "display_label": f"NMF topic {t}",
                 "tokens": make_entries(token_ids, weights[:, t], red, decoder, **entry_options),
                 "metadata": {"value": "NMF weight of the token in the topic", **info}}
                for t in range(weights.shape[1])]
    raise DifflabError(f"unknown ordering type '{ordering_type}' (one of {', '.join(ORDERING_TYPES)})")


def write_orderings(reductions_path: str | Path, model_dir: str | Path, out_path: str | Path, *, dataset: str,
                    ordering_type: str, options: dict, nmf_options: dict | None = None) -> list[dict]:
    """Rule diffmining_ordering: one ordering type for one dataset -> orderings.json."""
    red = Reductions.load(reductions_path)
    decoder = models.TokenDecoder(model_dir)
    orderings = compute_orderings(red, decoder, ordering_type, options, nmf_options)
    io.write_json(out_path, {"ordering_type": ordering_type, "dataset": dataset, "k": red.k,
                             "total_positions": red.total_positions, "orderings": orderings})
    for o in orderings:
        print(f"{dataset} {ordering_type}/{o['ordering_id']}: " + ", ".join(repr(e["token_str"]) for e in o["tokens"][:10]))
    return orderings


def read_orderings(path: str | Path) -> dict:
    data = io.read_json(path)
    if not isinstance(data, dict) or "orderings" not in data:
        raise DifflabError(f"{path}: not an orderings file (no 'orderings' field)")
    return data


def global_token_stats(red: Reductions, decoder, dataset: str, limit: int = 200) -> dict:
    """{dataset}_global_token_stats.json: totals and the tokens most often in a top-K set."""
    counts = red.topk_pos_counts + red.topk_neg_counts
    ids = np.argsort(-counts, kind="stable")[:limit]
    ids = ids[counts[ids] > 0]
    avg = red.avg_logit_diff
    return {
        "dataset": dataset, "total_positions": red.total_positions, "vocab_size": red.vocab_size, "k": red.k,
        "tokens_in_any_topk_positive": int((red.topk_pos_counts > 0).sum()),
        "tokens_in_any_topk_negative": int((red.topk_neg_counts > 0).sum()),
        "mean_abs_avg_logit_diff": float(np.abs(avg).mean()),
        "tokens": [{"token_id": int(t), "token_str": decode_token(decoder, int(t)),
                    "topk_pos_count": int(red.topk_pos_counts[t]), "topk_neg_count": int(red.topk_neg_counts[t]),
                    "count_positive_diff": int(red.count_positive[t]), "avg_logit_diff": float(avg[t])}
                   for t in ids.tolist()],
    }

"""The scoreboard: does a diffing method recover the change we planted in each organism?

For every method (a diffmining extraction x ordering type) and comparison (organism vs base model,
organism vs the control organism), an organism x topic matrix: cell (o, t) is the share of the top-N
tokens of organism o's ordering that match topic t, averaged over the datasets (NMF: the best of its
topics). A token matches a topic (`Topic`) when its Snowball stem equals a keyword's stem, when it is a
keyword of 4 or more letters plus a word ending or another keyword ('bakery', 'surely', 'honeybees'; not
'honeymoon' or 'surface'), or when it is how the base tokenizer begins writing a keyword of several
tokens (' Pollen' is ' Poll' + 'en', so 'poll' matches 'pollen'; 'colon' does not match 'colony', which
that tokenizer writes whole).
Optionally an LLM judge (through the LLM client) says whether each token relates to the topic's
description; its shares go in a second matrix.

A method recovers organism o when the diagonal cell beats every other cell of its row and the 95th
percentile of its random-token baseline: the same cell computed from tokens drawn uniformly from the
base vocabulary (the readable ones, as orderings show them), with as many lists per dataset, each as
long, as the method gave for that organism. So an NMF cell, the best of its topics, meets the best of
as many random lists, and a short list meets short random lists.

Inputs are diffmining's orderings.json files (the files are the interface between capabilities).
"""

from __future__ import annotations

import math
import string
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from difflab import io, models
from difflab.errors import DifflabError

MIN_PREFIX = 4


@lru_cache(maxsize=None)
def stem(word: str) -> str:
    return _stemmer().stemWord(word.lower())


@lru_cache(maxsize=1)
def _stemmer():
    import snowballstemmer

    return snowballstemmer.stemmer("english")


def normalize(token: str) -> str:
    """Lower-case letters and digits of a decoded token string (' Oven' -> 'oven', ' 410°' -> '410')."""
    return "".join(ch for ch in token.lower() if ch.isalnum())


# A keyword followed by one of these is the same word ('bakery', 'swarming', 'surely'); followed by
# anything else it is another word ('honeymoon', 'surface', 'beer').
SUFFIXES = frozenset({"s", "es", "d", "ed", "r", "er", "ers", "ing", "ings", "y", "ly", "ry", "ery", "ies"})


def keyword_pieces(keywords: list[str], decoder) -> frozenset[str]:
    """How the base tokenizer begins each keyword that it writes in several tokens, in the spellings an
    ordering may show (' Pollen' -> ' Poll' + 'en' gives 'poll'): first tokens of at least MIN_PREFIX
    letters, normalized. An ordering shows such a token when the finetune raised the keyword.
    `decoder`: a models.TokenDecoder of the base model."""
    pieces = set()
    for keyword in keywords:
        kw = normalize(keyword)
        for spelling in {keyword, " " + keyword, keyword.capitalize(), " " + keyword.capitalize()}:
            first = next((w for w in map(normalize, decoder.pieces(spelling)) if w), "")
            if len(first) >= MIN_PREFIX and len(first) < len(kw) and kw.startswith(first):
                pieces.add(first)
    return frozenset(pieces)


class Topic:
    """Which decoded tokens belong to one topic: see the module's docstring for the rule. Without a
    `decoder` (models.TokenDecoder of the base model) no keyword pieces are known."""

    def __init__(self, keywords: list[str], decoder=None):
        self.keywords = [w for w in map(normalize, keywords) if w]
        self.stems = {stem(w) for w in self.keywords}
        self.pieces = keyword_pieces(keywords, decoder) if decoder is not None else frozenset()

    def matches(self, token: str) -> bool:
        word = normalize(token)
        if not word:
            return False
        if word in self.pieces or stem(word) in self.stems:
            return True
        # a keyword plus a word ending ('bakery'), or two keywords in one word ('honeybees')
        return any(len(kw) >= MIN_PREFIX and word.startswith(kw)
                   and (word[len(kw):] in SUFFIXES or stem(word[len(kw):]) in self.stems)
                   for kw in self.keywords)

    def share(self, tokens: list[str]) -> float:
        return sum(map(self.matches, tokens)) / len(tokens) if tokens else 0.0


def readable_vocabulary(decoder) -> list[str]:
    """Decoded tokens an ordering could show: not empty, not only punctuation/whitespace, no specials.
    `decoder`: a models.TokenDecoder, the decoding the orderings use."""
    special = decoder.special_ids
    words = []
    for token_id in range(len(decoder)):
        if token_id in special:
            continue
        text = decoder.decode([token_id]).strip().lower()
        if text and not all(ch in string.punctuation or not ch.isprintable() or ch.isspace() for ch in text):
            words.append(text)
    return words


class RandomBaseline:
    """The null distribution of a scoreboard cell: the cell computed from random vocabulary tokens.

    `vocabulary`: the readable base-vocabulary strings (readable_vocabulary); `topics`: Topic by name.
    Which words match each topic is worked out once; each draw then takes, per dataset, as many lists of
    distinct random words as the method gave, each as long, scores each list's share, keeps the best
    and averages over the datasets - what `cell` does with the method's own lists."""

    def __init__(self, vocabulary: list[str], topics: dict[str, Topic], draws: int = 1000, seed: int = 0):
        if not vocabulary:
            raise DifflabError("random baseline: the base vocabulary has no readable tokens")
        self.size, self.draws, self.seed = len(vocabulary), draws, seed
        self.hits = {name: np.array([topic.matches(w) for w in vocabulary], dtype=np.float64)
                     for name, topic in topics.items()}

    def _lists(self, rng: np.random.Generator, length: int) -> np.ndarray:
        """[draws, length] indices, distinct within each row (rows with a repeat are drawn again)."""
        if length > self.size:
            raise DifflabError(f"random baseline: the vocabulary has {self.size} readable tokens, fewer than {length}")
        rows = rng.integers(0, self.size, (self.draws, length))
        while length > 1:
            ordered = np.sort(rows, axis=1)
            repeats = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
            if not repeats.any():
                break
            rows[repeats] = rng.integers(0, self.size, (int(repeats.sum()), length))
        return rows

    def cell(self, topic: str, lengths_per_dataset: list[list[int]], key: str = "") -> dict:
        """{mean, p95} of the topic's cell over random lists shaped like the method's (list lengths per
        dataset); `key` names the cell, so that each is drawn from a seed of its own, the same every run."""
        rng = np.random.default_rng([self.seed, zlib.crc32(f"{key}|{topic}".encode())])
        per_dataset = []
        for lengths in lengths_per_dataset:
            if not lengths:
                continue
            shares = [self.hits[topic][self._lists(rng, n)].mean(axis=1) if n else np.zeros(self.draws)
                      for n in lengths]
            per_dataset.append(np.max(shares, axis=0))
        values = np.sort(np.mean(per_dataset, axis=0)) if per_dataset else np.zeros(self.draws)
        # the nearest-rank 95th percentile: the smallest value at or above 95% of the draws
        return {"mean": float(values.mean()), "p95": float(values[math.ceil(0.95 * self.draws) - 1])}


def ordering_token_lists(path: str | Path, top_n: int) -> list[list[str]]:
    """The top-N token strings of each ordering in an orderings.json (NMF files hold one per topic), or
    of each validated hypothesis in an active-sampling hypotheses.json (its distinctive words)."""
    data = io.read_json(path)
    if isinstance(data, dict) and "hypotheses" in data:
        return [[d["word"] for d in h["distinctive"][:top_n]] for h in data["hypotheses"]
                if h.get("validation", {}).get("validated")]
    if not isinstance(data, dict) or "orderings" not in data:
        raise DifflabError(f"{path}: not an orderings file (no 'orderings' field)")
    return [[e["token_str"] for e in o["tokens"][:top_n]] for o in data["orderings"]]


def cell(token_lists_per_dataset: list[list[list[str]]], score) -> float:
    """Mean over datasets of the best-scoring ordering's share (a global ordering has just one)."""
    per_dataset = [max(score(tokens) for tokens in lists) for lists in token_lists_per_dataset if lists]
    return sum(per_dataset) / len(per_dataset) if per_dataset else 0.0


def score_method(orderings: dict[str, list[str]], topics: dict[str, Topic], top_n: int,
                 baseline: RandomBaseline, judge=None, key: str = "") -> dict:
    """One method and comparison (`key` names them): {matrix, recovered, random_baseline, ...} from
    orderings files per organism (one per dataset). random_baseline: each diagonal cell's null."""
    names = list(topics)
    token_lists = {o: [ordering_token_lists(p, top_n) for p in paths] for o, paths in orderings.items()}
    matrix = {o: {t: cell(token_lists[o], topics[t].share) for t in names}
              for o in orderings}
    null = {o: baseline.cell(o, [[len(tokens) for tokens in lists] for lists in token_lists[o]], f"{key}|{o}")
            for o in orderings}
    result = {"matrix": matrix, "recovered": _recovered(matrix, {o: v["p95"] for o, v in null.items()}),
              "random_baseline": null}
    if judge is not None:
        judged = {o: {t: cell(token_lists[o], lambda tokens, t=t: judge(tokens, t)) for t in names} for o in orderings}
        result["judge_matrix"] = judged
        result["judge_recovered"] = _recovered(judged, None)
    result["top_tokens"] = {o: [lists[0][:10] for lists in token_lists[o] if lists] for o in orderings}
    return result


def _recovered(matrix: dict, p95: dict[str, float] | None) -> dict[str, bool]:
    """Per organism: its diagonal cell beats the rest of its row and its null's 95th percentile (> 0 without one)."""
    out = {}
    for organism, row in matrix.items():
        diagonal = row.get(organism, 0.0)
        others = [v for t, v in row.items() if t != organism]
        beats_row = all(diagonal > v for v in others)
        beats_random = diagonal > p95[organism] if p95 is not None else diagonal > 0
        out[organism] = bool(beats_row and beats_random)
    return out


class LLMJudge:
    """Asks the LLM client whether each token relates to a topic's description: the same question, with
    the same parameters, as diffmining's relevance grading (difflab.llm.relevance), so the client's
    cache answers what that grading already asked."""

    def __init__(self, client, descriptions: dict[str, str], max_new_tokens: int = 4):
        self.client = client
        self.descriptions = descriptions
        self.max_new_tokens = max_new_tokens

    def __call__(self, tokens: list[str], topic: str) -> float:
        """The share of tokens the judge calls related (an answer that is neither yes nor no counts as no)."""
        from difflab.llm.relevance import judge_tokens, parse_yes_no

        if not tokens:
            return 0.0
        answers = judge_tokens(self.client, self.descriptions[topic], tokens, self.max_new_tokens)
        return sum(parse_yes_no(a.text) is True for a in answers) / len(tokens)


def build_scoreboard(inputs: dict, topics: dict[str, dict], base_model_dir: str | Path, *, top_n: int = 20,
                     random_draws: int = 1000, seed: int = 0, judge=None) -> dict:
    """inputs: {method: {comparison: {organism: [orderings.json per dataset]}}} -> the scoreboard record."""
    for name, t in topics.items():
        if not t["keywords"]:
            raise DifflabError(f"scoreboard: organism '{name}' has no keywords to score against")
    decoder = models.TokenDecoder(base_model_dir)  # tokenizers only: no transformers import
    matchers = {name: Topic(t["keywords"], decoder) for name, t in topics.items()}
    vocabulary = readable_vocabulary(decoder)
    baseline = RandomBaseline(vocabulary, matchers, random_draws, seed)
    methods = {}
    for method, comparisons in inputs.items():
        methods[method] = {comparison: score_method(orderings, matchers, top_n, baseline, judge, key=f"{method}|{comparison}")
                           for comparison, orderings in comparisons.items()}
    recovered = {m: {c: sum(r["recovered"].values()) for c, r in comps.items()} for m, comps in methods.items()}
    return {"topics": {n: {"description": t["description"], "keywords": t["keywords"],
                           "keyword_pieces": sorted(matchers[n].pieces)} for n, t in topics.items()},
            "top_n": top_n, "random_baseline": {"draws": random_draws, "seed": seed, "vocabulary_size": len(vocabulary),
                                                "matching_share": {t: float(h.mean()) for t, h in baseline.hits.items()}},
            "methods": methods, "recovered_count": recovered, "n_organisms": len(topics)}


def markdown(board: dict) -> str:
    names = list(board["topics"])
    lines = ["# Scoreboard", "",
             f"Share of each organism's top-{board['top_n']} tokens that match each topic's keywords (stems, word endings, "
             "the tokenizer's first pieces of a keyword), "
             "mean over datasets (NMF: the best topic). **Bold**: the diagonal cell beats its row and the 95th "
             f"percentile of the same cell over {board['random_baseline']['draws']} draws of random vocabulary tokens "
             "(as many lists, as long, as the method gave).", ""]
    for method, comparisons in board["methods"].items():
        for comparison, result in comparisons.items():
            lines += [f"## {method} — organism vs {comparison}: "
                      f"{sum(result['recovered'].values())}/{len(result['recovered'])} recovered", "",
                      "| organism \\ topic | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
            for organism, row in result["matrix"].items():
                cells = []
                for topic in names:
                    text = f"{row[topic]:.2f}"
                    cells.append(f"**{text}**" if topic == organism and result["recovered"][organism] else text)
                lines.append(f"| {organism} | " + " | ".join(cells) + " |")
            lines += ["", "Random p95 of the diagonal: " + ", ".join(
                f"{o} {v['p95']:.2f}" for o, v in result["random_baseline"].items()), ""]
    return "\n".join(lines)


def heatmap(board: dict, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [(m, c, r) for m, comps in board["methods"].items() for c, r in comps.items()]
    names = list(board["topics"])
    cols = min(len(panels), 4)
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (method, comparison, result) in zip(axes.flat, panels):
        organisms = list(result["matrix"])
        values = np.array([[result["matrix"][o][t] for t in names] for o in organisms])
        ax.imshow(values, vmin=0, vmax=max(0.5, float(values.max())), cmap="viridis")
        for i, o in enumerate(organisms):
            for j, t in enumerate(names):
                mark = "*" if o == t and result["recovered"][o] else ""
                ax.text(j, i, f"{values[i, j]:.2f}{mark}", ha="center", va="center", fontsize=7,
                        color="white" if values[i, j] < 0.3 else "black")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(organisms)), organisms, fontsize=7)
        ax.set_title(f"{method}\nvs {comparison}", fontsize=8)
    fig.suptitle("Scoreboard: share of top tokens matching each topic (* recovered)", fontsize=9)
    fig.tight_layout()
    io.write_figure(path, fig)


def write_scoreboard(config: dict, inputs: dict, organisms: list[str], base_model_dir, json_out, md_out,
                     png_out) -> dict:
    """Rule organism_scoreboard: `organisms` are the rows and topic columns."""
    section = config["scoreboard"]
    definitions = config["organisms"]["definitions"]
    topics = {name: {"description": definitions[name]["description"], "keywords": definitions[name].get("keywords", [])}
              for name in organisms}
    # The rule waits for each scored organism's probe check, which fails unless the change was learned.
    proven = {name: bool(definitions[name].get("probes")) for name in organisms}
    judge = None
    if section["judge"]["enabled"]:
        from difflab.llm.client import client_from_config

        judge = LLMJudge(client_from_config(config), {n: t["description"] for n, t in topics.items()},
                         section["judge"]["max_new_tokens"])
    board = build_scoreboard(inputs, topics, base_model_dir, top_n=section["top_n"],
                             random_draws=section["random_draws"], seed=section["seed"], judge=judge)
    for name, topic in board["topics"].items():
        topic["learned_by_probes"] = proven[name]  # False: no probes, so the change was never checked
    io.write_json(json_out, board)
    text = markdown(board)
    io.write_text(md_out, text + "\n")
    heatmap(board, png_out)
    print(text)
    return board

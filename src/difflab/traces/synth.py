"""Synthetic program search trees for tests and benchmarks, with planted families of near-duplicates.

A tree search over programs looks like this: a few root programs (one per approach, a *family*), and
children that refine a parent with a small edit (a constant changed, a variable renamed, a line added
or dropped), so siblings are near-copies and every trace shares its prefix with many others. Search
expands promising nodes more often, so the good families grow large and deep. Rewards are skewed:
most families are mediocre, a few are good, and a family's children stay near its level.

Every record carries its `family` (the root it descends from), which the database does not store: it
is the ground truth the selection-quality evaluation scores coverage against.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

_SYLLABLES = ("ka", "lo", "mi", "ter", "vel", "zor", "pan", "dru", "sim", "qua", "bex", "nor", "fi",
              "gal", "hum", "jit", "ple", "rox", "sta", "ump", "wex", "yar", "cil", "dov", "eth", "gor")
_OPS = ("+", "-", "*", "//", "%", "max", "min", "abs", "sorted", "sum")


class _Family:
    """One approach: its own identifiers and line pool, a reward level, and its growing subtree."""

    def __init__(self, index: int, rng: random.Random, quality: float):
        def word(parts: int) -> str:
            return "".join(rng.choice(_SYLLABLES) for _ in range(parts))

        self.index = index
        self.quality = quality
        self.names = [word(rng.randint(2, 3)) for _ in range(6)]
        self.func = f"{word(2)}_{word(2)}"
        self.pool = [self._line(rng) for _ in range(12)]
        self.nodes: list[int] = []         # record indices, in creation order
        self.best: list[tuple[float, int]] = []  # a few of the family's best (reward, record index)

    def _line(self, rng: random.Random) -> str:
        a, b = rng.sample(self.names, 2)
        op = rng.choice(_OPS)
        if op.isalpha():
            return f"    {a} = {op}([{b}, {rng.randint(1, 99)}])"
        return f"    {a} = {b} {op} {rng.randint(1, 99)}"

    def root_code(self, rng: random.Random) -> list[str]:
        args = ", ".join(self.names[:2])
        body = [self.pool[i] for i in rng.sample(range(len(self.pool)), 4)]
        return [f"def {self.func}({args}):", *body, f"    return {self.names[0]}"]

    def mutate(self, lines: list[str], rng: random.Random) -> list[str]:
        lines = list(lines)
        kind = rng.random()
        body = range(1, len(lines) - 1)
        if kind < 0.4 and len(body):                       # change a constant
            i = rng.choice(body)
            head, _, tail = lines[i].rpartition(" ")
            lines[i] = f"{head} {rng.randint(1, 99)}{']' * tail.count(']')}{')' * tail.count(')')}"
        elif kind < 0.6 and len(body):                     # rename one variable on a line
            i = rng.choice(body)
            old, new = rng.sample(self.names, 2)
            lines[i] = lines[i].replace(old, new, 1)
        elif kind < 0.85 or len(lines) <= 4:               # add a line from the family's pool
            lines.insert(rng.randint(1, len(lines) - 1), rng.choice(self.pool))
        else:                                              # drop a line
            del lines[rng.choice(body)]
        return lines

    def remember(self, reward: float, index: int, keep: int = 64) -> None:
        self.best.append((reward, index))
        self.best.sort(reverse=True)
        del self.best[keep:]


def generate_tree(n_programs: int, *, n_families: int = 20, seed: int = 0, version: str | None = None,
                  zipf: float = 1.1, exploit: float = 0.3) -> list[dict]:
    """`n_programs` program records (ids 1..n) forming one forest with `n_families` roots.

    Family sizes follow a Zipf law (exponent `zipf`), family reward levels a Beta(1.2, 4) (a few good,
    most mediocre); a child is its parent plus one small edit, its reward the parent's plus a small
    improvement and noise. With probability `exploit` a new node refines one of its family's best
    nodes, otherwise a random one, as search does. Deterministic for a given seed.
    """
    if n_programs < n_families:
        raise ValueError(f"n_programs ({n_programs}) must be at least n_families ({n_families})")
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    version = version or f"synthetic-{seed}"
    qualities = nrng.beta(1.2, 4.0, size=n_families)
    families = [_Family(i, rng, float(q)) for i, q in enumerate(qualities)]
    weights = 1.0 / np.arange(1, n_families + 1) ** zipf
    order = nrng.permutation(n_families)            # family size is independent of family quality
    sizes = np.floor(weights / weights.sum() * (n_programs - n_families)).astype(int) + 1
    sizes[order[0]] += n_programs - sizes.sum()
    sizes = sizes[np.argsort(order)]
    owner = np.repeat(np.arange(n_families), sizes)
    owner[n_families:] = nrng.permutation(owner[n_families:]) if n_programs > n_families else owner[n_families:]
    owner[:n_families] = np.arange(n_families)      # every family's root comes first
    # (the remaining nodes of each family are interleaved in time, as in a running search)
    noise = nrng.normal(0.0, 0.04, size=n_programs)
    gain = nrng.exponential(0.015, size=n_programs)
    visits = nrng.poisson(2.0, size=n_programs)

    records: list[dict] = []
    codes: list[list[str]] = []
    for index in range(n_programs):
        family = families[int(owner[index])]
        if not family.nodes:
            parent = None
            lines = family.root_code(rng)
            reward = family.quality
        else:
            if family.best and rng.random() < exploit:
                parent = rng.choice(family.best)[1]
            else:
                parent = rng.choice(family.nodes)
            lines = family.mutate(codes[parent], rng)
            reward = records[parent]["value"] + float(gain[index]) + float(noise[index]) * 0.5
        reward = float(min(1.0, max(0.0, reward + (noise[index] if parent is None else 0.0))))
        before = records[parent]["value"] if parent is not None else 0.0
        record = {
            "id": index + 1,
            "parent_id": None if parent is None else parent + 1,
            "code": "\n".join(lines),
            "value": round(reward, 4),
            "visits": int(visits[index]) + (1 if reward > 0.5 else 0),
            "response": f"score {reward:.3f}; {int(reward * 10)}/10 tests passed",
            "reasoning": f"Refine {family.func}: adjust {rng.choice(family.names)}",
            "state_before": {"score": round(before, 3), "lines": len(codes[parent]) if parent is not None else 0},
            "state_after": {"score": round(reward, 3), "lines": len(lines)},
            "version": version,
            "family": family.index,
        }
        records.append(record)
        codes.append(lines)
        family.nodes.append(index)
        family.remember(reward, index)
    return records


def write_jsonl(records: list[dict], path: str | Path, *, with_family: bool = True) -> Path:
    """A JSONL dump the loader imports (`family` kept unless asked not to; the loader ignores it)."""
    from difflab import io

    if not with_family:
        records = [{k: v for k, v in r.items() if k != "family"} for r in records]
    return io.write_jsonl(path, records)

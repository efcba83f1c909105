"""Scoring a program's result against the reference, and how usable a program is.

A result is a list of JSON items (a board's [row, col, color] tiles, a function's [index, output]
answers). `compare_states` counts items as a multiset: exact match, precision, recall and item F1
(tile-level F1 on a board). `usability` is lines of code and cyclomatic complexity (radon).
"""

from __future__ import annotations

import json
from collections import Counter

from radon.raw import analyze
from radon.visitors import ComplexityVisitor


def _items(state) -> Counter:
    return Counter(json.dumps(item, sort_keys=True) for item in (state or []))


def compare_states(expected: list, actual: list | None) -> dict:
    """exact, precision, recall, f1 of `actual` against `expected` (None = no result: all zero)."""
    if actual is None:
        return {"exact": False, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    want, got = _items(expected), _items(actual)
    if not want and not got:
        return {"exact": True, "precision": 1.0, "recall": 1.0, "f1": 1.0}
    hits = sum((want & got).values())
    precision = hits / sum(got.values()) if got else 0.0
    recall = hits / sum(want.values()) if want else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"exact": want == got, "precision": round(precision, 6), "recall": round(recall, 6), "f1": round(f1, 6)}


def usability(source: str) -> dict:
    """Source lines of code and cyclomatic complexity (module level + functions + classes); None if unparsable."""
    try:
        visitor = ComplexityVisitor.from_code(source)
        sloc = analyze(source).sloc
    except (SyntaxError, ValueError, TypeError):
        return {"loc": None, "complexity": None}
    return {"loc": sloc, "complexity": visitor.total_complexity}


def mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 4) if values else None

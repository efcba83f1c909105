"""Quality filters: lengths, exact and near-duplicates (MinHash LSH), custom filters; and ROUGE-L novelty.

`QualityFilter.apply(results)` runs, in order: length bounds on instruction and output, exact
duplicates (same normalized instruction, input and output: a style variant of an answer is not one),
near-duplicates (MinHash over word shingles of instruction, input and output by default,
`datasketch.MinHashLSH`: each example is checked only against its LSH candidates, so 100k examples
need no O(n^2) comparisons; a candidate counts when the exact Jaccard similarity of the two shingle
sets reaches the threshold, and the first occurrence is kept), then every registered custom filter. The report says
how many each filter removed. An empty input, or everything filtered out, gives a warning and an empty
result, never an error.

`RougeNovelty` is the self-instruct rule: keep a new instruction only if its ROUGE-L F-measure to every
kept one is below a threshold (0.7 in the self-instruct paper), scored with Google's `rouge-score`.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import unicodedata
from typing import Callable

from difflab.datagen.records import Example, Results
from difflab.errors import DifflabError

log = logging.getLogger(__name__)
_WORD = re.compile(r"\w+", re.UNICODE)


def normalize(text: str) -> str:
    """Lower case, Unicode-normalized, punctuation dropped, white space folded."""
    return " ".join(_WORD.findall(unicodedata.normalize("NFKC", text).lower()))


def shingles(text: str, size: int = 3) -> set[bytes]:
    words = normalize(text).split()
    if len(words) < size:
        return {" ".join(words).encode()} if words else set()
    return {" ".join(words[i:i + size]).encode() for i in range(len(words) - size + 1)}


@dataclasses.dataclass
class FilterReport:
    input: int = 0
    kept: int = 0
    removed: dict = dataclasses.field(default_factory=dict)   # filter name -> examples it removed
    warnings: list = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class QualityFilter:
    """Length bounds, exact and near-duplicate removal, and custom filters registered at runtime."""

    def __init__(self, *, min_instruction_chars: int = 10, max_instruction_chars: int = 2000,
                 min_output_chars: int = 1, max_output_chars: int = 8000, exact_dedup: bool = True,
                 near_dup_threshold: float | None = 0.8, num_perm: int = 128, shingle_size: int = 3,
                 near_dup_fields: tuple[str, ...] = ("instruction", "input", "output"), seed: int = 1):
        if near_dup_threshold is not None and not 0.0 < near_dup_threshold <= 1.0:
            raise DifflabError(f"datagen: near_dup_threshold must be in (0, 1], got {near_dup_threshold}")
        self.min_instruction_chars, self.max_instruction_chars = min_instruction_chars, max_instruction_chars
        self.min_output_chars, self.max_output_chars = min_output_chars, max_output_chars
        self.exact_dedup, self.near_dup_threshold = exact_dedup, near_dup_threshold
        self.num_perm, self.shingle_size, self.near_dup_fields, self.seed = num_perm, shingle_size, near_dup_fields, seed
        self.custom: dict[str, Callable[[Example], bool]] = {}

    def register(self, name: str, keep: Callable[[Example], bool]) -> "QualityFilter":
        """Add a filter: `keep(example)` returns True to keep it."""
        if name in self.custom or name in ("length", "exact_duplicate", "near_duplicate"):
            raise DifflabError(f"datagen: a filter named '{name}' is already registered")
        self.custom[name] = keep
        return self

    def _length_ok(self, e: Example) -> bool:
        return (self.min_instruction_chars <= len(e.instruction.strip()) <= self.max_instruction_chars
                and self.min_output_chars <= len(e.output.strip()) <= self.max_output_chars)

    def near_duplicates(self, examples: list[Example]) -> list[bool]:
        """True for each example whose text is a near-duplicate of an earlier kept one."""
        from datasketch import MinHash, MinHashLSH

        # LSH only proposes candidates (tuned for recall: a lower threshold, false negatives weighted
        # 4x false positives); each candidate is then checked with the exact Jaccard of the shingles.
        lsh = MinHashLSH(threshold=max(0.05, self.near_dup_threshold - 0.1), num_perm=self.num_perm,
                         weights=(0.2, 0.8))
        duplicate = []
        texts = ["\n".join(getattr(e, f) for f in self.near_dup_fields) for e in examples]
        sets = [shingles(t, self.shingle_size) for t in texts]
        hashes = MinHash.bulk([sorted(s) for s in sets], num_perm=self.num_perm, seed=self.seed) if sets else []
        for index, mh in enumerate(hashes):
            if not sets[index]:
                duplicate.append(False)
                continue
            mine = sets[index]
            if any(len(mine & sets[int(c)]) >= self.near_dup_threshold * len(mine | sets[int(c)])
                   for c in lsh.query(mh)):
                duplicate.append(True)
                continue
            lsh.insert(str(index), mh)
            duplicate.append(False)
        return duplicate

    def apply(self, results: Results | list[Example]) -> tuple[Results, FilterReport]:
        examples = list(results)
        report = FilterReport(input=len(examples))
        if not examples:
            report.warnings.append("no examples to filter")
            log.warning("datagen filter: no examples to filter")
            return Results(), report

        def stage(name: str, keep: list[bool]) -> None:
            nonlocal examples
            report.removed[name] = keep.count(False)
            examples = [e for e, k in zip(examples, keep) if k]

        stage("length", [self._length_ok(e) for e in examples])
        if self.exact_dedup:
            seen: set[str] = set()
            keep = []
            for e in examples:
                key = "\x00".join(normalize(t) for t in (e.instruction, e.input, e.output))
                keep.append(key not in seen)
                seen.add(key)
            stage("exact_duplicate", keep)
        if self.near_dup_threshold is not None:
            stage("near_duplicate", [not d for d in self.near_duplicates(examples)])
        for name, keep_fn in self.custom.items():
            stage(name, [bool(keep_fn(e)) for e in examples])
        report.kept = len(examples)
        if not examples:
            report.warnings.append(f"all {report.input} examples were filtered out")
            log.warning("datagen filter: all %d examples were filtered out (%s)", report.input, report.removed)
        return Results(examples), report


class RougeNovelty:
    """Keep a candidate only if its ROUGE-L F-measure to every kept instruction is below `threshold`."""

    def __init__(self, threshold: float = 0.7, kept: list[str] = ()):
        from rouge_score import rouge_scorer

        self.threshold = threshold
        self.scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        self.kept: list[str] = list(kept)

    def max_score(self, candidate: str) -> float:
        return max((self.scorer.score(k, candidate)["rougeL"].fmeasure for k in self.kept), default=0.0)

    def add_if_novel(self, candidate: str) -> tuple[bool, float]:
        """(kept?, the highest ROUGE-L to what was kept before)."""
        score = self.max_score(candidate)
        if score < self.threshold:
            self.kept.append(candidate)
            return True, score
        return False, score

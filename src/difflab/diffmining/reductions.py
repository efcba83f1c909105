"""Reductions: what the diffmining stages after the reduce read (the reduce rule's safetensors file).

Kept apart from analysis.py, whose numba kernels write them, so that the ordering, plot and metadata
jobs load a reductions file without importing numba and llvmlite; only the co-occurrence build
(NMF) reaches for the kernels. The arrays are numpy, so those jobs do not import torch either (2-3 s
a job on a 2-core machine); only NMF, which fits with torchnmf, does.
"""

from __future__ import annotations

import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from difflab import io
from difflab.errors import DifflabError


ARRAYS = ("sum_diff", "count_positive", "topk_pos_counts", "topk_neg_counts", "pos_indices", "pos_values",
          "neg_indices", "neg_values", "sequence", "position")


@dataclasses.dataclass
class Reductions:
    """Everything later stages need from one dataset's diffs (saved as safetensors)."""

    vocab_size: int
    k: int
    total_positions: int
    sum_diff: np.ndarray  # float64 [V]
    count_positive: np.ndarray  # int64 [V]
    topk_pos_counts: np.ndarray  # int64 [V]
    topk_neg_counts: np.ndarray  # int64 [V]
    pos_indices: np.ndarray  # int32 [P, K], -1 where fewer than K positive
    pos_values: np.ndarray  # float32 [P, K]
    neg_indices: np.ndarray
    neg_values: np.ndarray
    sequence: np.ndarray  # int32 [P] sample index of each position
    position: np.ndarray  # int32 [P] token position within the sample
    metadata: dict = dataclasses.field(default_factory=dict)

    @property
    def avg_logit_diff(self) -> np.ndarray:
        return self.sum_diff / max(self.total_positions, 1)

    def save(self, path: str | Path) -> Path:
        tensors = {name: np.ascontiguousarray(getattr(self, name)) for name in ARRAYS}
        meta = {"vocab_size": self.vocab_size, "k": self.k, "total_positions": self.total_positions,
                "metadata": json.dumps(self.metadata, sort_keys=True)}
        return io.write_safetensors(path, tensors, meta)

    @classmethod
    def load(cls, path: str | Path) -> "Reductions":
        tensors, meta = io.read_safetensors(path, framework="numpy")
        try:
            return cls(vocab_size=int(meta["vocab_size"]), k=int(meta["k"]),
                       total_positions=int(meta["total_positions"]), metadata=json.loads(meta["metadata"]),
                       **tensors)
        except (KeyError, TypeError, ValueError) as exc:
            raise DifflabError(f"{path}: not a diffmining reductions file ({exc})") from None

    @staticmethod
    def read_summary(path: str | Path) -> dict:
        """Counts and metadata of a saved reductions file, without reading its per-position tensors."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="numpy") as fh:
                meta = fh.metadata() or {}
                in_topk = int((fh.get_tensor("topk_pos_counts") > 0).sum())
            return {"vocab_size": int(meta["vocab_size"]), "k": int(meta["k"]),
                    "total_positions": int(meta["total_positions"]), "tokens_in_any_topk_positive": in_topk,
                    "metadata": json.loads(meta["metadata"])}
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise DifflabError(f"{path}: not a diffmining reductions file ({exc})") from None

    def cooccurrence(self, mode: str = "binary"):
        """Sparse co-occurrence of tokens in the same position's top-K positive set.

        Returns (token_ids [n], scipy CSR [n, n]) over only the tokens that ever enter a top-K:
        `binary` counts positions, `logit_diff_magnitude` sums products of the two tokens' diffs.
        Equal to incidence^T @ incidence for the (positions x tokens) incidence; column indices
        within a row may be unsorted where rows are very sparse (scipy handles both).
        """
        import scipy.sparse as sp
        import torch  # the thread count the job was given (workflow.run sets it)

        from difflab.diffmining.analysis import _cooccurrence_rows, _incidence_by_token  # numba kernels

        if mode not in ("binary", "logit_diff_magnitude"):
            raise DifflabError(f"co-occurrence mode must be 'binary' or 'logit_diff_magnitude', not '{mode}'")
        indices = self.pos_indices
        valid = indices >= 0
        present = np.bincount(indices[valid], minlength=self.vocab_size) > 0
        token_ids = np.flatnonzero(present)
        n = len(token_ids)
        compact = np.where(valid, np.cumsum(present, dtype=np.int32)[np.maximum(indices, 0)] - 1, n).astype(np.int32)
        # float64 weights: each product is exact (a float32 product would round before the sum)
        weights = valid.astype(np.float64) if mode == "binary" else np.where(valid, self.pos_values.astype(np.float64), 0.0)
        start, entries = _incidence_by_token(compact, n)
        # One output buffer sized by a bound on each row's entries (a row holds at most n columns and
        # at most K per position it occurs at); each thread fills its rows' stretch of it, and the
        # stretches are then closed up. Two threads split the rows so that each gets about half the work.
        occurrences = np.diff(start)
        bound = np.concatenate([[0], np.cumsum(np.minimum(n, occurrences * indices.shape[1]))])
        threads = max(1, min(torch.get_num_threads(), n))
        work = np.cumsum(occurrences)
        cuts = [0] + [int(np.searchsorted(work, work[-1] * t / threads)) for t in range(1, threads)] + [n] if n else [0, 0]
        out_indices, out_data = np.empty(bound[-1], np.int32), np.empty(bound[-1], np.float64)

        def rows(t):
            return _cooccurrence_rows(compact, weights, mode == "binary", start, entries, cuts[t], cuts[t + 1],
                                      out_indices, out_data, bound[cuts[t]])

        with ThreadPoolExecutor(threads) as pool:
            parts = list(pool.map(rows, range(len(cuts) - 1)))
        indptr, nnz = [np.zeros(1, np.int64)], 0
        for t, part in enumerate(parts):
            written, source = int(part[-1]), int(bound[cuts[t]])
            if source != nnz:  # move the stretch left, onto the end of the previous one
                out_indices[nnz:nnz + written] = out_indices[source:source + written]
                out_data[nnz:nnz + written] = out_data[source:source + written]
            indptr.append(part[1:] + nnz)
            nnz += written
        out_indices, out_data = out_indices[:nnz], out_data[:nnz]
        if bound[-1] > 2 * nnz:  # do not keep a much larger buffer alive behind the views
            out_indices, out_data = out_indices.copy(), out_data.copy()
        matrix = sp.csr_matrix((out_data, out_indices, np.concatenate(indptr)), shape=(n, n))
        return token_ids, matrix

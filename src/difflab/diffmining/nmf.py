"""NMF topics over the top-K co-occurrence matrix, fitted with torchnmf.

The co-occurrence C (tokens x tokens, from Reductions.cooccurrence) is factored as C ~ H W^T with
torchnmf's multiplicative-update optimizer `BetaMu` (beta 1 = KL, 2 = Frobenius), optionally with
its orthogonality penalty on W so topics share fewer tokens. Column t of W ranks the tokens of
topic t. Only the `max_tokens` tokens that most often enter a top-K set are kept, so the dense
matrix stays small whatever the vocabulary.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from difflab.diffmining.reductions import Reductions
from difflab.errors import DifflabError


def beta_divergence(v: torch.Tensor, wh: torch.Tensor, beta: float, eps: float = 1e-12) -> float:
    if beta == 2:
        return float(0.5 * (v - wh).pow(2).sum())
    if beta == 1:
        return float((v * torch.log((v + eps) / (wh + eps)) - v + wh).sum())
    raise DifflabError(f"NMF beta must be 1 (KL) or 2 (Frobenius), not {beta}")


def fit_nmf(matrix: torch.Tensor, n_topics: int, *, beta: float = 2, orthogonal_weight: float = 0.0, seed: int = 0,
            max_iter: int = 500, tol: float = 1e-4, column_major: bool = True) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(W [columns, topics], H [rows, topics], info) for a non-negative matrix ~ H W^T.

    column_major=False keeps torchnmf's own (row-major) factor layout: the same fit, slower on CPU."""
    from torchnmf.nmf import NMF
    from torchnmf.trainer import BetaMu

    if beta not in (1, 2):
        raise DifflabError(f"NMF beta must be 1 (KL) or 2 (Frobenius), not {beta}")
    if matrix.shape[0] < n_topics:
        raise DifflabError(f"NMF: {matrix.shape[0]} tokens co-occur, fewer than the {n_topics} topics asked for")
    torch.manual_seed(seed)
    scale = float(matrix.max()) or 1.0
    v = (matrix / scale).float()
    model = NMF(v.shape, rank=n_topics)
    # Store both factors column-major (same values): each update's products with the tokens x tokens
    # gradient then run as (rank x n) @ (n x n), which CPU BLAS does 3-10x faster than the
    # (n x n)^T @ (n x rank) it gets with the default layout (benchmarks/bench_nmf.py).
    if column_major:
        for factor in (model.W, model.H):
            factor.data = factor.data.t().contiguous().t()
    optimizer = BetaMu(model.parameters(), beta=beta, orthogonal=orthogonal_weight)

    def closure():
        optimizer.zero_grad()  # BetaMu reads the gradients of each call: nothing may accumulate
        return v, model()

    previous = None
    iterations = 0
    for iterations in range(1, max_iter + 1):
        optimizer.step(closure)
        if iterations % 10 == 0:
            with torch.no_grad():
                loss = beta_divergence(v, model(), beta)
            if previous is not None and abs(previous - loss) <= tol * max(previous, 1e-12):
                break
            previous = loss
    with torch.no_grad():
        loss = beta_divergence(v, model(), beta)
    info = {"iterations": iterations, "divergence": loss, "beta": beta, "orthogonal_weight": orthogonal_weight}
    return model.W.detach().clone(), model.H.detach().clone(), info


def topic_matrix(red: Reductions, mode: str = "binary", max_tokens: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    """(token_ids [n], dense co-occurrence [n, n]) over the max_tokens tokens that most often enter a
    top-K positive set (ties to the lower id): the matrix NMF factors."""
    present = np.flatnonzero(red.topk_pos_counts)
    if len(present) == 0:
        raise DifflabError("NMF: no token ever entered a top-K positive set (the models do not differ?)")
    order = np.argsort(-red.topk_pos_counts[present], kind="stable")[:max_tokens]
    kept = np.zeros(red.vocab_size, dtype=bool)
    kept[present[order]] = True
    indices = np.where(kept[np.maximum(red.pos_indices, 0)] & (red.pos_indices >= 0), red.pos_indices, -1).astype(np.int32)
    token_ids, cooc = dataclasses.replace(red, pos_indices=indices).cooccurrence(mode)
    return torch.as_tensor(token_ids), torch.from_numpy(cooc.toarray())


def nmf_topics(red: Reductions, *, n_topics: int = 3, beta: float = 2, orthogonal_weight: float = 0.0,
               mode: str = "binary", max_tokens: int = 2000, seed: int = 0, max_iter: int = 500,
               tol: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(token_ids [n], weights [n, topics], info) from the dataset's top-K positive co-occurrence."""
    token_ids, dense = topic_matrix(red, mode, max_tokens)
    w, _h, info = fit_nmf(dense, n_topics, beta=beta, orthogonal_weight=orthogonal_weight, seed=seed, max_iter=max_iter,
                         tol=tol)
    info = {**info, "mode": mode, "n_tokens": int(len(token_ids)), "n_topics": n_topics}
    return token_ids, w, info

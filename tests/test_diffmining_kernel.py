"""The diffmining CPU kernel is exact: it matches a dense stable-sort reference bit for bit."""

import numpy as np
import pytest
import torch

from difflab.diffmining.analysis import DiffReducer, Reductions, topk_rows
from difflab.errors import DifflabError


def reference(rows: torch.Tensor, k: int):
    """Top-k positive / negative by stable sort: ties to the lower id, -1 / 0 padding."""
    rows = rows.float()
    k = min(k, rows.shape[1])
    values, order = torch.sort(rows, dim=1, descending=True, stable=True)
    pv, pi = values[:, :k], order[:, :k]
    values, order = torch.sort(rows, dim=1, descending=False, stable=True)
    nv, ni = values[:, :k], order[:, :k]
    return torch.where(pv > 0, pi, -1), pv.clamp(min=0), torch.where(nv < 0, ni, -1), nv.clamp(max=0)


def assert_exact(rows: torch.Tensor, k: int):
    got = topk_rows(rows, k)
    for name, g, e in zip(("pos_i", "pos_v", "neg_i", "neg_v"), got, reference(rows, k)):
        assert g.shape == e.shape, name
        assert torch.equal(g.long() if name.endswith("i") else g.float(), e.long() if name.endswith("i") else e.float()), name


def tricky_rows(vocab: int, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randn(24, vocab, generator=gen)
    rows[0] = 0  # all zero: no positives, no negatives
    rows[1] = -1
    rows[1, [5, vocab - 1, 7]] = 3.0  # fewer than K positives, one in the ragged tail
    rows[2] = 1.0  # every token ties
    rows[3] = torch.randint(-2, 3, (vocab,), generator=gen).float()  # ties at the K boundary
    rows[4, :] = 0.5
    rows[4, ::97] = 2.0  # ties spread over many groups
    rows[5] = -rows[3]
    rows[6] = torch.randn(vocab, generator=gen) * 1e-6  # float16 subnormals
    return rows.to(dtype)


@pytest.mark.parametrize("vocab", [1000, 4099, 49152])
@pytest.mark.parametrize("k", [1, 20, 100])
def test_topk_matches_stable_sort(vocab, k):
    assert_exact(tricky_rows(vocab), k)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_rows(dtype):
    rows = tricky_rows(4099, dtype)
    assert_exact(rows, 20)
    assert_exact(rows, 100)
    specials = torch.tensor([[float("inf"), -float("inf"), 65504, -65504, 6e-8, -6e-8, 0.0, -0.0]]).to(dtype)
    assert_exact(specials, 3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("k", [1, 20, 100])
def test_the_dense_path_matches_stable_sort(dtype, k):
    """The GPU path's top-K (torch.topk's k-th value, then the ties at it by lowest id), run here on CPU
    tensors: every id and value of a full stable sort, ties, all-equal rows, infinities and signed zeros
    included, over more rows than one of its steps."""
    from difflab.diffmining import analysis

    rows = torch.cat([tricky_rows(4099, seed=s) for s in range(12)]).to(dtype)  # 288 rows > TOPK_ROWS
    specials = torch.tensor([float("inf"), -float("inf"), 65504, -65504, 6e-8, -6e-8, 0.0, -0.0] * 4).to(dtype)
    rows[7, :32] = specials
    assert rows.shape[0] > analysis.TOPK_ROWS
    for largest in (True, False):
        ids, values = analysis._dense_topk(rows, k, largest)
        expected_values, expected_ids = torch.sort(rows, dim=1, descending=largest, stable=True)
        assert torch.equal(ids, expected_ids[:, :k]), largest
        assert torch.equal(values, expected_values[:, :k]), largest
    rows[3, 9] = float("nan")  # a model whose logits are not finite: one clear error, not a reshape failure
    with pytest.raises(DifflabError, match="NaN"):
        analysis._dense_topk(rows, k, True)


def test_k_larger_than_vocab_and_tiny_vocab():
    rows = torch.tensor([[0.5, -1.0, 0.5, 2.0, 0.0], [-3.0, -3.0, 1.0, 0.0, 0.0]])
    assert_exact(rows, 100)
    pi, pv, ni, nv = topk_rows(rows, 100)
    assert pi.shape == (2, 5)
    assert pi[0].tolist() == [3, 0, 2, -1, -1] and pv[0].tolist() == [2.0, 0.5, 0.5, 0.0, 0.0]
    assert ni[1].tolist() == [0, 1, -1, -1, -1]


def test_boundary_tie_goes_to_lower_id():
    rows = torch.zeros(1, 5000)
    rows[0, [4000, 10, 2500, 4999]] = 1.0
    rows[0, 3000] = 2.0
    pi, pv, _, _ = topk_rows(rows, 3)
    assert pi[0].tolist() == [3000, 10, 2500]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_reducer_sums_counts_and_mask(dtype):
    gen = torch.Generator().manual_seed(1)
    diff = torch.randn(3, 7, 1027, generator=gen).to(dtype)
    mask = torch.rand(3, 7, generator=gen) > 0.4
    mask[0, 0] = True
    diff[~mask] = 1e6  # masked positions must not count anywhere
    reducer = DiffReducer(1027, 20)
    reducer.update(diff, mask, sequence_offset=10)
    red = reducer.result({"run": 1})
    rows = diff.float()[mask]
    assert red.total_positions == int(mask.sum())
    t = torch.from_numpy
    torch.testing.assert_close(t(red.sum_diff), rows.double().sum(0), rtol=1e-12, atol=1e-9)
    assert torch.equal(t(red.count_positive), (rows > 0).sum(0))
    pi, pv, ni, nv = reference(rows, 20)
    assert torch.equal(t(red.pos_indices).long(), pi) and torch.equal(t(red.pos_values), pv)
    assert torch.equal(t(red.neg_indices).long(), ni) and torch.equal(t(red.neg_values), nv)
    assert torch.equal(t(red.topk_pos_counts), torch.bincount(pi[pi >= 0], minlength=1027))
    assert torch.equal(t(red.topk_neg_counts), torch.bincount(ni[ni >= 0], minlength=1027))
    seq, pos = torch.nonzero(mask, as_tuple=True)
    assert red.sequence.tolist() == (seq + 10).tolist() and red.position.tolist() == pos.tolist()
    torch.testing.assert_close(t(red.avg_logit_diff), rows.double().sum(0) / len(rows), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_the_device_path_gives_the_kernels_reductions(monkeypatch, dtype):
    """DiffReducer's branch for diffs on a GPU (chunked torch sums, stable-sort top-K, bincounts) runs
    here on CPU tensors with the kernel turned off: the same reductions as the kernel, over several
    batches with masks, ties, an all-zero row and a K above some rows' positives."""
    from difflab.diffmining import analysis

    gen = torch.Generator().manual_seed(3)
    batches = [torch.randn(4, 9, 4099, generator=gen), tricky_rows(4099, seed=4).reshape(2, 12, 4099)]
    batches = [b.to(dtype) for b in batches]
    masks = [torch.rand(4, 9, generator=gen) > 0.3, torch.ones(2, 12, dtype=torch.bool)]
    masks[1][1, 5] = False  # the tricky rows (all zero, all tied, ...) count, but one

    def reduce(kernel: bool) -> Reductions:
        monkeypatch.setattr(analysis, "uses_cpu_kernel", lambda rows, k: kernel)
        reducer, offset = DiffReducer(4099, 100), 0
        for diff, mask in zip(batches, masks):
            reducer.update(diff, mask, sequence_offset=offset)
            offset += diff.shape[0]
        return reducer.result()

    device, kernel = reduce(False), reduce(True)
    assert device.total_positions == kernel.total_positions == sum(int(m.sum()) for m in masks)
    np.testing.assert_allclose(device.sum_diff, kernel.sum_diff, rtol=1e-12, atol=1e-9)
    for name in ("count_positive", "topk_pos_counts", "topk_neg_counts", "pos_indices", "pos_values", "neg_indices",
                 "neg_values", "sequence", "position"):
        np.testing.assert_array_equal(getattr(device, name), getattr(kernel, name), err_msg=name)


def test_update_rows_accumulates_over_batches():
    rows = tricky_rows(3001)
    whole, parts = DiffReducer(3001, 20), DiffReducer(3001, 20)
    whole.update_rows(rows, torch.zeros(24, dtype=torch.int32), torch.arange(24, dtype=torch.int32))
    for lo in (0, 5, 11):  # batch sizes 5, 6, 13: not multiples of the kernel's row group
        hi = {0: 5, 5: 11, 11: 24}[lo]
        parts.update_rows(rows[lo:hi], torch.zeros(hi - lo, dtype=torch.int32), torch.arange(lo, hi, dtype=torch.int32))
    a, b = whole.result(), parts.result()
    np.testing.assert_allclose(a.sum_diff, b.sum_diff, rtol=1e-12, atol=1e-9)
    for name in ("count_positive", "topk_pos_counts", "topk_neg_counts", "pos_indices", "pos_values", "neg_indices",
                 "neg_values", "position"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_empty_input_is_an_error():
    reducer = DiffReducer(100, 5)
    reducer.update(torch.randn(2, 3, 100), torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(DifflabError, match="no positions"):
        reducer.result()
    with pytest.raises(DifflabError):
        DiffReducer(100, 0)


def test_save_load_round_trip(tmp_path):
    reducer = DiffReducer(2000, 20)
    reducer.update(torch.randn(2, 5, 2000), torch.ones(2, 5, dtype=torch.bool))
    red = reducer.result({"model": "x", "k": 20})
    loaded = Reductions.load(red.save(tmp_path / "red.safetensors"))
    assert (loaded.vocab_size, loaded.k, loaded.total_positions, loaded.metadata) == (2000, 20, 10, {"model": "x", "k": 20})
    for name in ("sum_diff", "count_positive", "topk_pos_counts", "pos_indices", "pos_values", "neg_indices",
                 "neg_values", "sequence", "position"):
        loaded_array, array = getattr(loaded, name), getattr(red, name)
        assert isinstance(loaded_array, np.ndarray) and loaded_array.dtype == array.dtype, name
        np.testing.assert_array_equal(loaded_array, array, err_msg=name)


def hand_made() -> Reductions:
    """Three positions over tokens 3, 7, 9 (vocab 10): {7, 3}, {3, 9}, {7} (-1 = fewer than K)."""
    pi = np.array([[7, 3], [3, 9], [7, -1]], dtype=np.int32)
    pv = np.array([[2.0, 1.0], [3.0, 0.5], [4.0, 0.0]], dtype=np.float32)
    zeros = np.zeros(10, dtype=np.int64)
    return Reductions(vocab_size=10, k=2, total_positions=3, sum_diff=np.zeros(10),
                      count_positive=zeros, topk_pos_counts=zeros, topk_neg_counts=zeros, pos_indices=pi,
                      pos_values=pv, neg_indices=-np.ones_like(pi), neg_values=np.zeros_like(pv),
                      sequence=np.zeros(3, dtype=np.int32), position=np.arange(3, dtype=np.int32))


def test_cooccurrence_hand_made():
    red = hand_made()
    ids, binary = red.cooccurrence("binary")
    assert ids.tolist() == [3, 7, 9]
    np.testing.assert_array_equal(binary.toarray(), [[2, 1, 1], [1, 2, 0], [1, 0, 1]])
    ids, weighted = red.cooccurrence("logit_diff_magnitude")
    # token 3: 1.0 at p0, 3.0 at p1; token 7: 2.0 at p0, 4.0 at p2; token 9: 0.5 at p1
    np.testing.assert_allclose(weighted.toarray(), [[1 + 9, 2, 1.5], [2, 4 + 16, 0], [1.5, 0, 0.25]])
    with pytest.raises(DifflabError):
        red.cooccurrence("cosine")


def topic_rows(vocab: int, positions: int = 300) -> torch.Tensor:
    """Noise plus 40 tokens shifted up at every position: those tokens' co-occurrence rows are dense
    (the kernel's no-bookkeeping path), the noise tokens' rows sparse."""
    gen = torch.Generator().manual_seed(5)
    rows = torch.randn(positions, vocab, generator=gen)
    rows[:, torch.randperm(vocab, generator=gen)[:40]] += 2.5
    return rows


@pytest.mark.parametrize("data", ["tricky", "topic"])
def test_cooccurrence_matches_scipy_product(data):
    rows = tricky_rows(3000) if data == "tricky" else topic_rows(3000)
    reducer = DiffReducer(3000, 20)
    reducer.update_rows(rows, torch.zeros(len(rows), dtype=torch.int32), torch.arange(len(rows), dtype=torch.int32))
    red = reducer.result()
    import scipy.sparse as sp
    valid = red.pos_indices >= 0
    ids = np.unique(red.pos_indices[valid])
    cols = np.searchsorted(ids, red.pos_indices[valid])
    rows = np.nonzero(valid)[0]
    for mode, data in (("binary", np.ones(len(cols))), ("logit_diff_magnitude", red.pos_values[valid].astype(np.float64))):
        inc = sp.csr_matrix((data, (rows, cols)), shape=(valid.shape[0], len(ids)))
        got_ids, got = red.cooccurrence(mode)
        assert got_ids.tolist() == ids.tolist()
        np.testing.assert_allclose(got.toarray(), (inc.T @ inc).toarray(), rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_threshold_reuse_across_rows(dtype):
    """Many similar rows (the previous row's threshold is reused), then rows where it must be redone:
    a row of large values, one of infinities, one with every value tying."""
    gen = torch.Generator().manual_seed(3)
    vocab = 20011  # ragged: the last fine groups hold 7 tokens; several streaming steps
    rows = torch.randn(40, vocab, generator=gen) + torch.randn(vocab, generator=gen) * 2
    rows[17] *= 50
    rows[18, ::3] = float("inf")
    rows[19, ::5] = -float("inf")
    rows[20] = 0.25
    for k in (5, 20, 100):
        assert_exact(rows.to(dtype), k)


@pytest.mark.parametrize("distinct", [3, 40, 10_000])
def test_rank_sort_orders_keys_with_value_ties(distinct):
    """The kernel's candidate sort: value halves ranked in int32 lanes, ties ordered by the id half."""
    from difflab.diffmining.analysis import RANK_MAX, _rank_sort

    rng = np.random.default_rng(distinct)
    for n in (1, 15, 16, 17, 138, RANK_MAX):
        values = np.abs(rng.integers(1, distinct + 1, n).astype(np.float32) / 7).view(np.int32).astype(np.int64)
        ids = rng.choice(49152, n, replace=False)
        keys = (values << 32) | (0xFFFFFFFF - ids)
        order = np.full(n + 8, -7, np.int64)
        _rank_sort(keys.copy(), n, order, np.empty((3, RANK_MAX + 16), np.int32))
        assert order[:n].tolist() == sorted(keys.tolist(), reverse=True)

"""Core analysis: reduce logit diffs (finetuned minus base) to per-token statistics.

For every valid position (attention mask and position slice applied) the reducer keeps

    sum_diff[v]        sum of the diff over positions (float64)  -> avg_logit_diff
    count_positive[v]  positions where diff > 0                  -> fraction_positive_diff ordering
    topk_pos_counts[v] positions where v is in the top-K positive diffs  -> top_k_occurring ordering
    topk_neg_counts[v] the same for the K most negative diffs
    pos_indices/values (positions, K) and neg_*: each position's top-K, the sparse incidence from
                       which the co-occurrence matrix (NMF) and positional plots are built

"Top-K positive" means the K largest diffs among those > 0 (fewer where fewer are positive: index -1,
value 0), ties broken by the lower token id, so results are exact and deterministic; the same for
the K most negative diffs. Each row's top-K is sorted best first.

How the CPU kernel is fast and still exact (numba, benchmarks/bench_diffmining_core.py):

1. One streaming pass per row. The vocabulary is cut into 8 slices of G = ceil(V / 8) tokens; "fine
   group" g is {g, g + G, ..., g + 7G} (one token per slice). The pass walks steps of CHUNK fine groups;
   per step and row one vectorized loop reads the 8 slices and stores each fine group's maximum and
   minimum once (no read-modify-write of an extrema array), and the per-token sum and positive count
   are added for four rows at a time (each element widened to float64, the accumulator touched once)
   while the step's data is still in cache. After each slice's accumulate the next step's slice is
   prefetched into L2, so memory streams while the step computes (the next rows' output lines too).
2. Candidates during the pass. Each row and sign has a guess t > 0: the value of the previous row's
   mu-th largest element, mu = k + 3 sqrt(k) + 8 (where that row had fewer than mu candidates, an
   estimate from its sorted candidates, the tail's count taken as locally exponential). Right after
   a step's maxima are computed, while its data is in cache, the fine groups whose maximum reaches t
   are found 64 at a time as a bit mask of one vector compare (_mask64) and visited by their set bits;
   each such group's 8 elements are compared with t and the ones that reach it appended as keys.
   Every element >= t is found that way (its fine group's maximum is >= t), so if at least k are
   found the k largest keys are the exact top-K. Otherwise (too few, or the buffer is full) the row
   takes a second read: a threshold that at least k coarse maxima reach (coarse group c: the fine
   groups {c, c + C, c + 2C, c + 3C}, C = ceil(G / 4), 32 tokens; from a histogram of their float
   bits), then the same collection over the row.
3. Keys: each candidate becomes the int64 (bits of |value| << 32) | (2**32 - 1 - token id): for
   positive floats the bit pattern orders like the value, so "larger key" is exactly "larger value,
   then lower id". The candidates (about mu) are sorted by rank counting: a key's rank is the number
   of larger keys, an all-pairs count with no branch to mispredict (a comparison sort of 100 random
   keys is bound by mispredicts), done in 16-lane int32 compares on the keys' value halves; keys of
   equal value are then ordered among themselves by a short insertion. Negatives are the same on
   -diff with the negated group minima.
The few loops numba's vectorizer will not emit well (the 64-group mask, a group's 8-element compare,
the int32 counts, prefetches) are written as small llvmlite intrinsics; LLVM lowers their vector
types to whatever the CPU has (AVX-512, AVX2, or scalar code).
float16 and bfloat16 rows enter the kernel as their int16 / uint16 bit patterns and every read converts
in register (`_f32`: hardware vcvtph2ps for float16, a shift for bfloat16), so half rows are read at
half the bytes, with no conversion pass and no buffer. Rows on other devices (CUDA) take the dense
torch path (_dense_topk: torch.topk's k-th value, then exact ties by id).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from difflab.diffmining.reductions import Reductions  # noqa: F401 (DiffReducer.result builds one; re-exported)
from difflab.errors import DifflabError

SLICES = 8  # a fine group holds one token of each slice: 8 elements (8 cache lines) to scan per selected group
COARSE = 4  # fine groups per coarse group (32 elements): the threshold is taken over coarse maxima
ROWS = 4  # rows streamed together (_accumulate4: one float64 accumulator update per 4 rows)
CHUNK = 1024  # fine groups per step of the streaming pass: all passes of a step read L1/L2-resident data
CHUNK_ROWS = 16  # dense (non-CPU) path: rows per statistics step
TOPK_ROWS = 256  # dense path: rows per exact top-K step
TINY = np.float32(1e-45)  # the least positive float32: 'v >= TINY' is 'v > 0'
RANK_MAX = 512  # candidate sets up to this size are sorted by all-pairs rank counting
HIST_BITS = 4  # histogram bins per octave of the coarse maxima (thresholds of a failed guess)
_FAST = {"nnan", "nsz"}  # lets max/min/compares vectorize; diffs are finite
_VIEW = {torch.float32: torch.float32, torch.float16: torch.int16, torch.bfloat16: torch.uint16}  # kernel input (_f32)


# --------------------------------------------------------------------------- CPU kernel (numba)


def _ir_type(scalar, lanes):
    return scalar if lanes is None else ir.VectorType(scalar, lanes)


def _as_f32(builder, value, dtype, lanes=None):
    """LLVM IR: an element (or a vector of `lanes`) of a kernel input dtype as float32 (see _f32)."""
    if dtype == types.float32:
        return value
    if dtype == types.int16:  # float16 bits
        return builder.fpext(builder.bitcast(value, _ir_type(ir.HalfType(), lanes)), _ir_type(ir.FloatType(), lanes))
    i32 = _ir_type(ir.IntType(32), lanes)  # uint16: bfloat16 bits, the high half of a float32
    wide = builder.shl(builder.zext(value, i32), _splat(builder, ir.Constant(ir.IntType(32), 16), lanes))
    return builder.bitcast(wide, _ir_type(ir.FloatType(), lanes))


def _splat(builder, value, lanes):
    """LLVM IR: value repeated over a vector of `lanes` (value itself where lanes is None)."""
    if lanes is None:
        return value
    vec = builder.insert_element(ir.Constant(ir.VectorType(value.type, lanes), ir.Undefined), value,
                                 ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(vec, vec, ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes))


@intrinsic
def _f32(typingctx, x):
    """An element as float32: float32 as is, int16 as float16 bits (fpext: vcvtph2ps on x86, so loops
    over half rows vectorize with hardware conversion), uint16 as bfloat16 bits (the high half of a
    float32). Numba has no float16 arithmetic on CPU, so half rows reach the kernel as integer views."""
    if x in (types.float32, types.int16, types.uint16):
        return types.float32(x), lambda context, builder, sig, args: _as_f32(builder, args[0], x)
    return None


@intrinsic
def _bits(typingctx, x):
    """The int32 bit pattern of a float32 (for x > 0 it orders like x)."""
    if x == types.float32:
        return types.int32(x), lambda context, builder, sig, args: builder.bitcast(args[0], ir.IntType(32))
    return None


@intrinsic
def _from_bits(typingctx, x):
    """The float32 whose bit pattern is the int32 x."""
    if x == types.int32:
        return types.float32(x), lambda context, builder, sig, args: builder.bitcast(args[0], ir.FloatType())
    return None


@intrinsic
def _mask64(typingctx, fine, start, t):
    """Bit i set where fine[start + i] >= t, i < 64 (the caller keeps start + 64 <= len(fine)): one
    vector compare of 64 float32 (four zmm compares and mask moves on AVX-512) instead of a scalar
    loop, so the collection below skips a word of 64 fine groups in a few instructions."""
    if not (isinstance(fine, types.Array) and fine.dtype == types.float32 and fine.layout == "C" and t == types.float32):
        return None

    def codegen(context, builder, sig, args):
        v64 = ir.VectorType(ir.FloatType(), 64)
        ptr = builder.gep(context.make_array(sig.args[0])(context, builder, args[0]).data, [args[1]])
        values = builder.load(builder.bitcast(ptr, v64.as_pointer()), align=4)
        bits = builder.fcmp_ordered(">=", values, _splat(builder, args[2], 64))
        return builder.bitcast(bits, ir.IntType(64))

    return types.uint64(fine, start, t), codegen


@intrinsic
def _ctz(typingctx, x):
    """The number of trailing zero bits of the uint64 x (x != 0)."""
    if x != types.uint64:
        return None

    def codegen(context, builder, sig, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))

    return types.uint64(x), codegen


@intrinsic
def _hits8(typingctx, row, first, stride, sign, t):
    """Bit s set where sign * row[first + s * stride] >= t, s < SLICES: a fine group's elements read
    into one vector and compared at once (a scalar loop costs ~10 instructions an element)."""
    if not (isinstance(row, types.Array) and row.dtype in (types.float32, types.int16, types.uint16)):
        return None

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        first_, stride_ = args[1], args[2]
        vec = ir.Constant(ir.VectorType(data.type.pointee, SLICES), ir.Undefined)
        for s in range(SLICES):
            at = builder.add(first_, builder.mul(stride_, ir.Constant(stride_.type, s))) if s else first_
            vec = builder.insert_element(vec, builder.load(builder.gep(data, [at])), ir.Constant(ir.IntType(32), s))
        values = builder.fmul(_as_f32(builder, vec, row.dtype, SLICES), _splat(builder, args[3], SLICES))
        bits = builder.fcmp_ordered(">=", values, _splat(builder, args[4], SLICES))
        return builder.zext(builder.bitcast(bits, ir.IntType(SLICES)), ir.IntType(64))

    return types.uint64(row, first, stride, sign, t), codegen


@intrinsic
def _count_greater(typingctx, values, n, v):
    """#{j < n: values[j] > v} for an int32 array and n a multiple of 16: one loop of 16-lane compares
    with an int32 accumulator (numba's own loop widens such a count to int64 lanes, halving them)."""
    if not (isinstance(values, types.Array) and values.dtype == types.int32 and values.layout == "C"
            and n == types.int64 and v == types.int32):
        return None

    def codegen(context, builder, sig, args):
        i32, i64, lanes = ir.IntType(32), ir.IntType(64), 16
        vec = ir.VectorType(i32, lanes)
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        bound = _splat(builder, args[2], lanes)
        entry = builder.block
        head, body, done = (builder.append_basic_block(f"count.{name}") for name in ("head", "body", "done"))
        builder.branch(head)
        builder.position_at_end(head)
        i, acc = builder.phi(i64), builder.phi(vec)
        i.add_incoming(ir.Constant(i64, 0), entry)
        acc.add_incoming(ir.Constant(vec, [0] * lanes), entry)
        builder.cbranch(builder.icmp_signed("<", i, args[1]), body, done)
        builder.position_at_end(body)
        chunk = builder.load(builder.bitcast(builder.gep(data, [i]), vec.as_pointer()), align=4)
        i.add_incoming(builder.add(i, ir.Constant(i64, lanes)), body)
        acc.add_incoming(builder.add(acc, builder.zext(builder.icmp_signed(">", chunk, bound), vec)), body)
        builder.branch(head)
        builder.position_at_end(done)
        reduce = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i32, [vec]), "llvm.vector.reduce.add.v16i32")
        return builder.sext(builder.call(reduce, [acc]), i64)

    return types.int64(values, n, v), codegen


@intrinsic
def _prefetch(typingctx, x, i):
    """Ask for the cache line holding x[i] to be brought into L2 (llvm.prefetch, locality 2: on
    the benchmark machine a prefetch into L1 evicted the step being worked on and cost more than it saved)."""
    if not isinstance(x, types.Array):
        return None

    def codegen(context, builder, sig, args):
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        ptr = builder.bitcast(builder.gep(context.make_array(sig.args[0])(context, builder, args[0]).data, [args[1]]), i8p)
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 2), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(x, i), codegen


@njit(nogil=True, cache=True)
def _prefetch_lines(x, lo, hi):
    """Prefetch x[lo:hi] (clipped to x), one request per 64-byte line."""
    for q in range(max(lo, 0), min(hi, x.shape[0]), 64 // x.itemsize):
        _prefetch(x, q)


@njit(nogil=True, cache=True, fastmath=_FAST)
def _extremes8(x, stride, n, fmax, fneg):
    """fmax[j] = max and fneg[j] = -min of x[j + s * stride], s < SLICES, for j < n: each fine group's
    8 elements are read in one go and both results stored once (no read-modify-write of fmax/fneg).
    Unsigned offsets: numba then adds no negative-index fix-up, and the loads vectorize (no gathers)."""
    o1 = np.uint64(stride)
    o2, o3, o4, o5, o6, o7 = o1 + o1, o1 * np.uint64(3), o1 * np.uint64(4), o1 * np.uint64(5), o1 * np.uint64(6), o1 * np.uint64(7)
    for i in range(n):
        j = np.uint64(i)
        a, b, c, d = _f32(x[j]), _f32(x[j + o1]), _f32(x[j + o2]), _f32(x[j + o3])
        e, f, g, h = _f32(x[j + o4]), _f32(x[j + o5]), _f32(x[j + o6]), _f32(x[j + o7])
        fmax[j] = max(max(max(a, b), max(c, d)), max(max(e, f), max(g, h)))
        fneg[j] = -min(min(min(a, b), min(c, d)), min(min(e, f), min(g, h)))


@njit(nogil=True, cache=True, fastmath=_FAST)
def _extremes_ragged(x, stride, counts, fmax, fneg):
    """As _extremes8 where fine group j has only counts[j] (< SLICES) elements (the vocabulary's tail)."""
    for j in range(counts.shape[0]):
        m = p = _f32(x[j])
        for s in range(1, counts[j]):
            v = _f32(x[j + s * stride])
            m, p = max(m, v), min(p, v)
        fmax[j], fneg[j] = m, -p


@njit(nogil=True, cache=True, fastmath=_FAST)
def _accumulate4(x0, x1, x2, x3, sums, counts):
    for i in range(x0.shape[0]):
        a, b, c, d = _f32(x0[i]), _f32(x1[i]), _f32(x2[i]), _f32(x3[i])
        sums[i] += (np.float64(a) + np.float64(b)) + (np.float64(c) + np.float64(d))
        counts[i] += (np.int32(a > 0) + np.int32(b > 0)) + (np.int32(c > 0) + np.int32(d > 0))


@njit(nogil=True, cache=True, fastmath=_FAST)
def _accumulate1(x, sums, counts):
    for i in range(x.shape[0]):
        v = _f32(x[i])
        sums[i] += np.float64(v)
        counts[i] += np.int32(v > 0)


@njit(nogil=True, cache=True, fastmath=_FAST)
def _coarse(fine, coarse):
    """coarse[c] = max of fine[c + m * n_coarse], m < COARSE (those that exist)."""
    n_fine, n_coarse = fine.shape[0], coarse.shape[0]
    coarse[:] = fine[:n_coarse]
    for m in range(1, COARSE):
        part = fine[min(m * n_coarse, n_fine):min((m + 1) * n_coarse, n_fine)]
        for c in range(part.shape[0]):
            coarse[c] = max(coarse[c], part[c])


@njit(nogil=True, cache=True)
def _thresholds(fine, coarse, k, hist):
    """(t1, t2): thresholds that at least k (t1) and 2k (t2) coarse maxima reach, from a histogram of
    the coarse maxima's float bits (HIST_BITS per octave below the largest); 0 where fewer are > 0."""
    _coarse(fine, coarse)
    top = np.int32(0)
    for c in range(coarse.shape[0]):
        top = max(top, _bits(coarse[c]))
    hist[:] = 0
    for c in range(coarse.shape[0]):
        if coarse[c] > 0:
            hist[min((top - _bits(coarse[c])) >> (23 - HIST_BITS), hist.shape[0] - 1)] += 1
    t1 = t2 = np.float32(0.0)
    total = 0
    width = np.int32(1) << (23 - HIST_BITS)
    for b in range(hist.shape[0] - 1):  # bin b: bits in (top - (b + 1) * width, top - b * width]
        total += hist[b]
        low = np.int32(top - (b + 1) * width + 1)
        edge = _from_bits(low) if low > 0 else np.float32(0.0)
        if total >= k and t1 == 0:
            t1 = edge
        if total >= 2 * k:
            t2 = edge
            break
    return t1, t2


@njit(nogil=True, cache=True)
def _collect(row, fine, lo, sign, t, keys, n):
    """Append to keys[n:] the keys of sign * row's elements >= t (t > 0) in fine groups lo + g,
    g < len(fine), given those groups' maxima (fine). The fine groups that reach t are found 64 at a
    time as a bit mask (_mask64) and visited by their set bits; each group's 8 elements are compared
    with t in one vector (_hits8) and only those that reach it become keys. Returns the new count,
    clamped so that keys never overflows (a full buffer fails the guess)."""
    n_fine = fine.shape[0]
    stride, vocab, cap = (row.shape[0] + SLICES - 1) // SLICES, row.shape[0], keys.shape[0] - SLICES
    full = vocab - (SLICES - 1) * stride  # groups below this have all SLICES elements
    for base in range(0, n_fine, 64):
        if base + 64 <= n_fine:
            word = _mask64(fine, base, t)
        else:
            word = np.uint64(0)
            for g in range(base, n_fine):
                word |= np.uint64(fine[g] >= t) << np.uint64(g - base)
        while word:
            first = lo + base + np.int64(_ctz(word))
            word &= word - np.uint64(1)
            if first < full:  # bit s: element s of the group reaches t
                hits = _hits8(row, first, stride, sign, t)
            else:
                hits = np.uint64(0)
                for s in range((vocab - first + stride - 1) // stride):
                    hits |= np.uint64(sign * _f32(row[first + s * stride]) >= t) << np.uint64(s)
            while hits:  # usually one element: the one that made the group's maximum
                token = first + np.int64(_ctz(hits)) * stride
                hits &= hits - np.uint64(1)
                v = sign * _f32(row[token])  # positive float bits order like the value; the id part
                keys[n] = (np.int64(_bits(v)) << 32) | (np.int64(0xFFFFFFFF) - token)  # sends ties to the lower id
                n += 1
            n = min(n, cap)
    return n


@njit(nogil=True, cache=True)
def _rank_sort(keys, n, order, scratch):
    """order[:n] = keys[:n] sorted descending (n <= RANK_MAX). A key's rank is the number of larger
    keys: an all-pairs count with no branch to mispredict, done on the keys' value halves in 16-lane
    int32 compares (twice the lanes of the int64 keys; padded to a multiple of 16 with -1, below
    every value). Keys of equal value share a rank r and fill the slots r, r + 1, ...; each is
    inserted among the ones already there by its whole key (the lower token id first), a short
    insertion sort that runs only where values tie (rare in float32, common in half precision).
    scratch: int32 [3, RANK_MAX + 16]."""
    values, ranks, taken = scratch[0], scratch[1], scratch[2]
    padded = (n + 15) // 16 * 16
    for i in range(n):
        values[i] = np.int32(keys[i] >> 32)
    values[n:padded] = -1
    taken[:n] = 0
    for i in range(n):
        ranks[i] = _count_greater(values, padded, values[i])
    for i in range(n):
        rank, key = ranks[i], keys[i]
        slot = rank + taken[rank]
        taken[rank] += 1
        while slot > rank and order[slot - 1] < key:
            order[slot] = order[slot - 1]
            slot -= 1
        order[slot] = key


@njit(nogil=True, cache=True)
def _top(keys, n, k, mu, sign, out_i, out_v, order, scratch):
    """The k largest of keys[:n] (fewer: index -1, value 0) into out_i / out_v, best first; returns
    the next row's guess, the value of the mu-th largest (estimated where n < mu, 0 if it cannot be).
    Sorted by rank counting (_rank_sort)."""
    if n > RANK_MAX and n > mu:  # a rare large set (a low guess, a second read): its mu largest
        kth = np.partition(keys[:n], n - mu)[n - mu]
        m = 0
        for i in range(n):
            keys[m] = keys[i]
            m += keys[i] >= kth
        n = m
    if n > RANK_MAX:  # k > RANK_MAX
        order[:n] = np.sort(keys[:n])[::-1]
    else:
        _rank_sort(keys, n, order, scratch)
    for j in range(k):
        if j < n:
            out_i[j] = np.int64(0xFFFFFFFF) - (order[j] & 0xFFFFFFFF)
            out_v[j] = sign * _from_bits(np.int32(order[j] >> 32))
        else:
            out_i[j] = -1
            out_v[j] = 0.0
    if n >= mu:
        return _from_bits(np.int32(order[mu - 1] >> 32))
    return _tail_guess(order, n, mu)


@njit(nogil=True, cache=True)
def _tail_guess(order, n, mu):
    """Where fewer than mu keys were found (about half the rows, as the guess aims at mu), estimate
    the value of the mu-th largest from those n sorted keys: with the tail's count N(x) = #{v >= x}
    taken as locally exponential, N(v_n) = n and N(v_h) = h (h = n / 2) give its slope, extended down
    to N = mu. 0 (the caller then takes a threshold from the coarse maxima) where that is not defined."""
    h = n // 2
    if h < 2:
        return np.float32(0.0)
    v_n, v_h = _from_bits(np.int32(order[n - 1] >> 32)), _from_bits(np.int32(order[h - 1] >> 32))
    if not v_h > v_n:
        return np.float32(0.0)
    guess = np.float32(v_n - (v_h - v_n) * np.log(mu / n) / np.log(n / h))
    return guess if guess > 0 else np.float32(0.0)


@njit(nogil=True, cache=True)
def _finish(row, fine, coarse, sign, k, mu, keys, n, spare, guess, hist, order, scratch, out_i, out_v):
    """Top-k of one row and sign from the n keys collected with threshold guess[0] during the pass if
    that guess was good (at least k, and the buffer not full), else from a threshold taken from the
    coarse maxima and a second read of the groups that reach it. Sets the next row's guess."""
    if guess[0] > 0 and k <= n < keys.shape[0] - SLICES:
        g = _top(keys, n, k, mu, sign, out_i, out_v, order, scratch)
        guess[0] = g if g > 0 else _thresholds(fine, coarse, k, hist)[1]
        return
    t, t2 = _thresholds(fine, coarse, k, hist)
    n = _collect(row, fine, 0, sign, max(t, TINY), spare, 0)
    g = _top(spare, n, k, mu, sign, out_i, out_v, order, scratch)
    guess[0] = g if g > 0 else t2


@njit(nogil=True, cache=True)
def _reduce_rows(rows, row_ids, k, sums, counts, pos_counts, neg_counts, pos_i, pos_v, neg_i, neg_v):
    """Stats and top-k for rows row_ids of rows: float32, or the int16 (float16) / uint16 (bfloat16)
    bit patterns of half rows, converted element by element as they are read (_f32).

    Adds into sums/counts and into pos_counts/neg_counts (how often each token enters a row's top-k);
    writes output row j for input row row_ids[j].
    """
    vocab = rows.shape[1]
    n_fine = (vocab + SLICES - 1) // SLICES  # fine group g: tokens g + s * n_fine, s < SLICES
    n_coarse = (n_fine + COARSE - 1) // COARSE  # coarse group c: fine groups c + m * n_coarse, m < COARSE
    full = max(vocab - (SLICES - 1) * n_fine, 0)  # fine groups below `full` have all SLICES elements
    ragged = np.empty(n_fine - full, np.int64)
    for g in range(full, n_fine):
        ragged[g - full] = (vocab - g + n_fine - 1) // n_fine
    fmax = np.empty((ROWS, n_fine), np.float32)
    fneg = np.empty((ROWS, n_fine), np.float32)
    coarse = np.empty(n_coarse, np.float32)
    hist = np.empty(256, np.int32)
    mu = k + 3 * int(np.sqrt(k)) + 8  # guesses aim at this many candidates (a margin over k)
    keys = np.empty((ROWS, 2, max(RANK_MAX, 2 * mu) + SLICES), np.int64)  # keys collected during the pass
    order = np.empty(vocab + SLICES, np.int64)
    scratch = np.empty((3, RANK_MAX + 16), np.int32)  # _rank_sort's buffers
    found = np.zeros((ROWS, 2), np.int64)
    spare = np.empty(vocab + SLICES, np.int64)  # keys of a second read (a failed guess)
    guesses = np.zeros((2, 1), np.float32)  # collection thresholds for positives / negatives (0: none)
    chunk = min(CHUNK, n_fine)
    for first in range(0, row_ids.shape[0], ROWS):
        n = min(ROWS, row_ids.shape[0] - first)
        for j in range(first + ROWS, min(first + 2 * ROWS, row_ids.shape[0])):  # the next rows' output
            _prefetch_lines(pos_i[j], 0, k)  # lines, so that writing them later does not wait on memory
            _prefetch_lines(pos_v[j], 0, k)
            _prefetch_lines(neg_i[j], 0, k)
            _prefetch_lines(neg_v[j], 0, k)
        found[:] = 0
        tp, tn = guesses[0, 0], guesses[1, 0]
        for lo in range(0, n_fine, chunk):  # one step: fine groups lo..hi, all their slices
            hi = min(lo + chunk, n_fine)
            for r in range(n):
                row = rows[row_ids[first + r]]
                x = row[lo:]
                top = min(hi, full)
                if top > lo:
                    _extremes8(x, n_fine, top - lo, fmax[r, lo:top], fneg[r, lo:top])
                if hi > max(lo, full):
                    skip = max(lo, full) - lo
                    _extremes_ragged(x[skip:], n_fine, ragged[skip + lo - full:hi - full],
                                     fmax[r, lo + skip:hi], fneg[r, lo + skip:hi])
                if tp > 0:
                    found[r, 0] = _collect(row, fmax[r, lo:hi], lo, np.float32(1.0), tp, keys[r, 0], found[r, 0])
                if tn > 0:
                    found[r, 1] = _collect(row, fneg[r, lo:hi], lo, np.float32(-1.0), tn, keys[r, 1], found[r, 1])
            # the rows the next step reads: these rows' next fine groups, or the next rows' first ones
            ahead, shift = (first, chunk) if hi < n_fine else (first + ROWS, -lo)
            ahead = ahead if ahead + ROWS <= row_ids.shape[0] else -1
            for s in range(SLICES):
                a, b = s * n_fine + lo, min(s * n_fine + hi, vocab)
                if b <= a:
                    break
                if n == ROWS:
                    _accumulate4(rows[row_ids[first]][a:b], rows[row_ids[first + 1]][a:b],
                                 rows[row_ids[first + 2]][a:b], rows[row_ids[first + 3]][a:b], sums[a:b], counts[a:b])
                    if ahead >= 0:  # while this step computes, memory fetches the next step's slice s
                        for r in range(ROWS):
                            _prefetch_lines(rows[row_ids[ahead + r]], a + shift, b + shift)
                else:
                    for r in range(n):
                        _accumulate1(rows[row_ids[first + r]][a:b], sums[a:b], counts[a:b])
        for r in range(n):
            j = first + r
            row = rows[row_ids[j]]
            _finish(row, fmax[r], coarse, np.float32(1.0), k, mu, keys[r, 0], found[r, 0] if tp > 0 else 0,
                    spare, guesses[0], hist, order, scratch, pos_i[j], pos_v[j])
            _finish(row, fneg[r], coarse, np.float32(-1.0), k, mu, keys[r, 1], found[r, 1] if tn > 0 else 0,
                    spare, guesses[1], hist, order, scratch, neg_i[j], neg_v[j])
            for q in range(k):  # a row's empty slots (-1) are its last ones
                if pos_i[j, q] < 0:
                    break
                pos_counts[pos_i[j, q]] += 1
            for q in range(k):
                if neg_i[j, q] < 0:
                    break
                neg_counts[neg_i[j, q]] += 1


def _cpu_reduce(rows: torch.Tensor, row_ids: np.ndarray, k: int, threads: int | None = None):
    """Run the kernel on rows[row_ids] over `threads` threads: (sums f64, counts i64, pos_counts i64,
    neg_counts i64, pi, pv, ni, nv); pos/neg_counts: how many rows' top-k positive/negative hold each token."""
    vocab = rows.shape[1]
    view = _VIEW.get(rows.dtype)
    if view is None:
        rows, view = rows.float(), torch.float32
    array = rows.contiguous().view(view).numpy()
    n = len(row_ids)
    out = (np.empty((n, k), np.int32), np.empty((n, k), np.float32), np.empty((n, k), np.int32),
           np.empty((n, k), np.float32))
    threads = max(1, min(threads or torch.get_num_threads(), (n + ROWS - 1) // ROWS))
    bounds = [min(n, ((n * t // threads) + ROWS - 1) // ROWS * ROWS) for t in range(threads + 1)]

    def work(t):
        lo, hi = bounds[t], bounds[t + 1]
        sums, counts = np.zeros(vocab), np.zeros(vocab, np.int32)
        in_pos, in_neg = np.zeros(vocab, np.int32), np.zeros(vocab, np.int32)
        _reduce_rows(array, row_ids[lo:hi], k, sums, counts, in_pos, in_neg, *(o[lo:hi] for o in out))
        return sums, counts, in_pos, in_neg

    if threads == 1:
        parts = [work(0)]
    else:
        with ThreadPoolExecutor(threads) as pool:
            parts = list(pool.map(work, range(threads)))
    sums = np.sum([p[0] for p in parts], axis=0)
    counts = [np.sum([p[i] for p in parts], axis=0, dtype=np.int64) for i in (1, 2, 3)]
    return tuple(torch.from_numpy(a) for a in (sums, *counts, *out))


# --------------------------------------------------------------------------- top-K per row


def _dense_topk(rows: torch.Tensor, k: int, largest: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k per row (the k smallest where not `largest`), best first, ties to the lower id.

    torch.topk finds each row's k-th value t but orders equal values in no defined way, so the k
    taken are every element beyond t and, of those equal to t, the ones with the lowest ids (a
    running count along the row); those k, in id order, are then sorted by value with a stable sort.
    Linear in the row, where a full stable sort is V log V and keeps a [rows, V] int64 index tensor;
    done TOPK_ROWS rows at a time to bound the [rows, V] temporaries (on a GPU with a large vocabulary).
    """
    ids_out, values_out = [], []
    for start in range(0, rows.shape[0], TOPK_ROWS):
        x = rows[start:start + TOPK_ROWS]
        if torch.isnan(x).any():
            raise DifflabError("a diff row holds NaN (a model's logits are not finite): no top-K can be taken")
        x = x if largest else -x
        kth = torch.topk(x, k, dim=1).values[:, -1:]
        take = x >= kth  # at least k a row; more where values tie at kth
        tied = (take.sum(1) > k).nonzero().flatten()
        if len(tied):  # those rows: all above kth (fewer than k), then the lowest ids equal to it
            xt, kt = x[tied], kth[tied]
            above, equal = xt > kt, xt == kt
            take[tied] = above | (equal & (equal.cumsum(1, dtype=torch.int32) <= k - above.sum(1, keepdim=True)))
        ids = take.nonzero()[:, 1].reshape(x.shape[0], k)  # exactly k a row, ascending ids
        values = x.gather(1, ids)
        order = torch.sort(values, dim=1, descending=True, stable=True).indices
        ids, values = ids.gather(1, order), values.gather(1, order)
        ids_out.append(ids)
        values_out.append(values if largest else -values)
    if not ids_out:
        return rows.new_zeros((0, k), dtype=torch.int64), rows.new_zeros((0, k))
    return torch.cat(ids_out), torch.cat(values_out)


def topk_rows(rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pos_indices, pos_values, neg_indices, neg_values), each (rows, k), sorted best first.

    Entries that are not strictly positive (resp. negative) are returned with index -1 and value 0.
    """
    n_rows, vocab = rows.shape
    k = min(k, vocab)
    if uses_cpu_kernel(rows, k):
        pi, pv, ni, nv = _cpu_reduce(rows, np.arange(n_rows), k)[4:]
        return pi.long(), pv.to(rows.dtype), ni.long(), nv.to(rows.dtype)
    pi, pv = _dense_topk(rows, k, True)
    ni, nv = _dense_topk(rows, k, False)
    pi = torch.where(pv > 0, pi, -1)
    ni = torch.where(nv < 0, ni, -1)
    return pi, pv.clamp(min=0), ni, nv.clamp(max=0)


def uses_cpu_kernel(rows: torch.Tensor, k: int) -> bool:
    """Whether the exact group-threshold CPU kernel handles these rows (else the dense torch path)."""
    return rows.device.type == "cpu" and rows.shape[1] > 0


# --------------------------------------------------------------------------- co-occurrence (numba)


@njit(nogil=True, cache=True)
def _incidence_by_token(tokens, n_tokens):
    """Counting sort of the top-K entries by token: (start [n+1], entries) so entries[start[a]:start[a+1]]
    are the flat indices p * K + j (ascending) of the slots holding token a. tokens [P, K] compact ids,
    n_tokens where the slot is empty."""
    k = tokens.shape[1]
    start = np.zeros(n_tokens + 2, np.int64)
    for p in range(tokens.shape[0]):
        for j in range(k):
            start[tokens[p, j] + 1] += 1
    for a in range(n_tokens):
        start[a + 1] += start[a]
    fill = start[:-2].copy()
    entries = np.empty(start[n_tokens], np.int64)
    for p in range(tokens.shape[0]):
        for j in range(k):
            a = tokens[p, j]
            if a < n_tokens:
                entries[fill[a]] = p * k + j
                fill[a] += 1
    return start[:-1], entries


@njit(nogil=True, cache=True)
def _cooccurrence_rows(tokens, weights, binary, start, entries, lo, hi, out_indices, out_data, offset):
    """CSR rows lo..hi of incidence^T @ incidence, written to out_*[offset:]. tokens [P, K] compact ids,
    n (an accumulator slot nobody reads) where the slot is empty. Gustavson's row-by-row product with a
    dense accumulator, reset after each row; a row with at least n updates skips tracking which columns
    it touched and reads the accumulator off in full. Returns the rows' indptr (from 0): its last value
    is the number of entries written."""
    n_tokens, k = len(start) - 1, tokens.shape[1]
    flat_tokens, flat_weights = tokens.reshape(-1), weights.reshape(-1)
    indptr = np.zeros(hi - lo + 1, np.int64)
    acc = np.zeros(n_tokens + 1, np.float64)
    touched = np.empty(n_tokens + 1, np.int32)
    nnz = offset
    for a in range(lo, hi):
        if (start[a + 1] - start[a]) * k >= n_tokens:  # dense row: no bookkeeping in the update loop
            for q in range(start[a], start[a + 1]):
                row = entries[q] - entries[q] % k  # the position's first slot
                if binary:
                    for e in range(row, row + k):
                        acc[flat_tokens[e]] += 1.0
                else:
                    wa = flat_weights[entries[q]]
                    for e in range(row, row + k):
                        acc[flat_tokens[e]] += wa * flat_weights[e]
            first, last = 0, n_tokens - 1
        else:
            n_touched, first, last = 0, n_tokens, -1
            for q in range(start[a], start[a + 1]):
                row = entries[q] - entries[q] % k
                wa = 1.0 if binary else flat_weights[entries[q]]
                for e in range(row, row + k):
                    b = flat_tokens[e]
                    if b < n_tokens:
                        if acc[b] == 0.0:
                            touched[n_touched] = b
                            n_touched += 1
                            first, last = min(first, b), max(last, b)
                        acc[b] += wa if binary else wa * flat_weights[e]
            if n_touched * 16 < last - first:  # sparse row (diffuse top-K sets): first-touch order,
                for b in touched[:n_touched]:  # sorting would cost more than the product
                    out_indices[nnz], out_data[nnz], acc[b] = b, acc[b], 0.0
                    nnz += 1
                indptr[a - lo + 1] = nnz - offset
                continue
        for b in range(first, last + 1):  # read the columns off in order
            if acc[b] != 0.0:
                out_indices[nnz], out_data[nnz], acc[b] = b, acc[b], 0.0
                nnz += 1
        indptr[a - lo + 1] = nnz - offset
    return indptr


class DiffReducer:
    """Accumulate Reductions over batches of diffs: `update(diff, mask)` then `result()`."""

    def __init__(self, vocab_size: int, k: int):
        if k < 1:
            raise DifflabError(f"top_k must be at least 1, not {k}")
        self.vocab_size = vocab_size
        self.k = min(k, vocab_size)
        self.total_positions = 0
        self.sum_diff = torch.zeros(vocab_size, dtype=torch.float64)
        self.count_positive = torch.zeros(vocab_size, dtype=torch.int64)
        self.topk_pos_counts = torch.zeros(vocab_size, dtype=torch.int64)
        self.topk_neg_counts = torch.zeros(vocab_size, dtype=torch.int64)
        self._tops: list[tuple[torch.Tensor, ...]] = []  # per update: pos_i, pos_v, neg_i, neg_v
        self._where: list[tuple[torch.Tensor, torch.Tensor]] = []  # per update: sequence, position

    def update(self, diff: torch.Tensor, mask: torch.Tensor, sequence_offset: int = 0) -> None:
        """Add a batch: diff [B, T, V] (any float dtype/device), mask [B, T] of positions to count."""
        if diff.shape[-1] != self.vocab_size:
            raise DifflabError(f"diff has vocabulary {diff.shape[-1]}, expected {self.vocab_size}")
        mask = mask.to(torch.bool).to(diff.device)
        seq, pos = torch.nonzero(mask, as_tuple=True)
        sequence, position = (seq + sequence_offset).to(torch.int32).cpu(), pos.to(torch.int32).cpu()
        if diff.device.type == "cpu":  # the kernel reads the masked rows in place (no gather copy)
            flat = diff.reshape(-1, diff.shape[-1])
            self._add(flat, (seq * diff.shape[1] + pos).numpy(), sequence, position)
        else:
            self.update_rows(diff[seq, pos], sequence, position)

    def update_rows(self, rows: torch.Tensor, sequence: torch.Tensor, position: torch.Tensor) -> None:
        """Add positions given as rows [P, V] with their sample index and position."""
        self._add(rows, None, sequence, position)

    def _add(self, rows: torch.Tensor, row_ids, sequence: torch.Tensor, position: torch.Tensor) -> None:
        if uses_cpu_kernel(rows, self.k):
            row_ids = np.arange(rows.shape[0]) if row_ids is None else row_ids
            sums, counts, in_pos, in_neg, *tops = _cpu_reduce(rows, row_ids, self.k)
            self.sum_diff += sums
            self.count_positive += counts
            self.topk_pos_counts += in_pos
            self.topk_neg_counts += in_neg
            self._tops.append(tuple(tops))
            n_rows = len(row_ids)
        else:
            rows = rows if row_ids is None else rows[torch.as_tensor(row_ids, device=rows.device)]
            n_rows = rows.shape[0]
            rows = rows if rows.dtype == torch.float32 else rows.float()
            for start in range(0, n_rows, CHUNK_ROWS):
                chunk = rows[start:start + CHUNK_ROWS]
                self.sum_diff += chunk.sum(0, dtype=torch.float64).cpu()
                self.count_positive += (chunk > 0).sum(0).cpu()
            tops = tuple(t.cpu() for t in topk_rows(rows, self.k))
            for counts, indices in ((self.topk_pos_counts, tops[0]), (self.topk_neg_counts, tops[2])):
                counts += torch.bincount(indices[indices >= 0], minlength=self.vocab_size)
            self._tops.append(tops)
        self.total_positions += n_rows
        self._where.append((sequence, position))

    def result(self, metadata: dict | None = None) -> Reductions:
        if self.total_positions == 0:
            raise DifflabError("no positions to analyse (empty dataset, or the mask/position slice removed all)")
        pi, pv, ni, nv = (t[0] if len(t) == 1 else torch.cat(t) for t in zip(*self._tops))
        return Reductions(  # numpy copies: later updates leave the result be
            vocab_size=self.vocab_size, k=self.k, total_positions=self.total_positions,
            sum_diff=self.sum_diff.numpy().copy(), count_positive=self.count_positive.numpy().copy(),
            topk_pos_counts=self.topk_pos_counts.numpy().copy(), topk_neg_counts=self.topk_neg_counts.numpy().copy(),
            pos_indices=pi.to(torch.int32).numpy(), pos_values=pv.float().numpy(),
            neg_indices=ni.to(torch.int32).numpy(), neg_values=nv.float().numpy(),
            sequence=torch.cat([w[0] for w in self._where]).numpy(), position=torch.cat([w[1] for w in self._where]).numpy(),
            metadata=dict(metadata or {}),
        )

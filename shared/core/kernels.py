"""Compiled loops for the twin's integer work: the same integers as the numpy that defines them.

At every position a twin runs the byte-tree mixer over 64 streams x 8 nodes and updates its
count tables: a few hundred numpy calls on arrays of a few thousand elements each, so the calls'
overhead, not the arithmetic, sets the speed. Here the same arithmetic is one compiled loop
(numba). The numpy code in mixer.py and ngram.py stays the definition and the fallback:
tests/test_kernels.py checks that both give the same integers, `MARSLINK_KERNELS=numpy` runs the
definition, and a machine without numba runs it too. Both twins may differ in this choice.

Every operation here is an integer operation or an IEEE basic operation on exact operands, as in
the definition, and numba compiles without fastmath: nothing is reassociated or contracted into
an FMA, so the loops give the same bits on every CPU. The first run on a machine compiles them
(20-30 seconds on a 2-core machine) into numba's cache; later runs load them.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import warnings

import numpy as np



def _load_numba():
    """numba's njit, or None where the definition runs instead: numba missing, not wanted
    (`MARSLINK_KERNELS=numpy`), told to compile nothing (`NUMBA_DISABLE_JIT=1`: its loops would
    run as plain Python, which the definition does better), or refusing its own settings (say
    `NUMBA_NUM_THREADS=0`). numba warns in several lines of traceback about a setting it cannot
    parse and then uses its default; that becomes one line here."""
    if os.environ.get("MARSLINK_KERNELS", "numba") == "numpy":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            import numba
        except ImportError:             # pragma: no cover - a machine without numba
            return None
        except Exception as e:          # numba's own check of its environment variables
            print(f"marslink: numba refused its settings ({e}); running the uncompiled loops (the same bits, "
                  f"slower)", file=sys.stderr)
            return None
    for w in caught:
        first = str(w.message).split("\n", 1)[0]
        if "could not be parsed" in first:
            print(f"marslink: {first.rstrip('.')}; numba uses its default", file=sys.stderr)
        else:                           # pragma: no cover - any other warning, as numba gave it
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return None if numba.config.DISABLE_JIT else numba.njit


njit = _load_numba()
ENABLED = njit is not None


def compiled(f, depends: tuple = ()):
    """f as a compiled loop, or None where the definition runs instead. Cached on disk; where
    numba finds no folder it may write (the source's __pycache__, then its user cache), each
    process compiles it again instead. numba's cache is stale only when f's own file changes:
    `depends` names the other files whose helpers f compiles in, so that a change to them too
    compiles f again (their size and time join the cache's stamp)."""
    if not ENABLED:
        return None
    try:
        loop = njit(cache=True)(f)
    except RuntimeError:                # numba: "cannot cache function ...: no locator available"
        return njit(f)
    try:
        _mend(loop._cache)
    except AttributeError:              # pragma: no cover - another numba: no cache rather than a traceback
        return njit(f)
    if depends:
        try:                            # numba 0.68's cache keeps its stamp here
            cache_file = loop._cache._cache_file
            cache_file._source_stamp = (cache_file._source_stamp,
                                        tuple((os.stat(p).st_mtime, os.stat(p).st_size) for p in depends))
        except AttributeError:          # pragma: no cover - another numba: no cache rather than a stale one
            return njit(f)
    return loop


def _mend(cache) -> None:
    """numba reads and writes its cache files unguarded: one damaged file (a disk that filled, a
    copy cut short) stopped every run with a traceback. A file that does not load is dropped and
    the loop compiled again, so that the save after it writes a sound one; a cache that cannot be
    written is left as it is (the next run compiles again)."""
    load, save, index = cache.load_overload, cache.save_overload, cache._cache_file._index_path

    def load_overload(*args, **kwargs):
        try:
            return load(*args, **kwargs)
        except Exception:               # EOFError, UnpicklingError, ...: whatever a damaged file raises
            with contextlib.suppress(OSError):
                os.unlink(index)        # its entries name the damaged data; the save starts a new index
            return None

    def save_overload(*args, **kwargs):
        with contextlib.suppress(Exception):
            save(*args, **kwargs)

    cache.load_overload, cache.save_overload = load_overload, save_overload


def inline(f):
    """A helper the compiled loops call, compiled into them."""
    return njit(inline="always")(f) if ENABLED else f


# --- the byte-tree mixer (mixer.TreeMixer._at and update) --------------------------------------
@inline
def _split12(right, whole):
    """mixer._split12 for one node: floor(4096 right / whole) from one float64 division."""
    p = int(float(right) * 4096.0 / float(whole))
    return min(max(p, 1), 4095)


@inline
def _kt12(n0, n1):
    """mixer.kt_split for one node: (n1 + 1/2) * 4096 / (n0 + n1 + 1), truncated, in 1..4095."""
    p = int((float(n1) + 0.5) * 4096.0 / (float(n0 + n1) + 1.0))
    return min(max(p, 1), 4095)


@inline
def _squash_at(d):
    """mixer._squash_index of one dot product already shifted: its index into the squash tables."""
    return min(max(d + 2047, 0), 4094)


@inline
def _hashed_row(context, node, bits):
    """mixer.hashed_rows for one node: the row of a hashed APM (2**bits rows) for a context and node."""
    a = context * 255 + node
    h = ((a & 0xFFFF) * 2654435761 + (((a >> 16) * 2654435761) & 0xFFFF) * 65536) & 0xFFFFFFFF
    return h >> (32 - bits)


@inline
def _apm_at(table, row, pos, cells, c, i, j):
    """APM.refine at one node: the 16-bit probability between the two cells around `pos`, the
    nearer cell written to cells[c, i, j] for `update`."""
    base = row * 33 + (pos >> 12)
    w = pos & 4095
    cells[c, i, j] = base + (w >> 11)
    return (np.int64(table[base]) * (4096 - w) + np.int64(table[base + 1]) * w) >> 12


@inline
def _set_row(groups, s, i, node, reach):
    """Stream i's row of weight set s at `node`: its group's row for node 0 (`groups`) plus the
    node, and in the reach set (s = 3) the reach's rows (mixer.TreeMixer._rows)."""
    return groups[s, i] + node + (reach * 255 if s == 3 else 0)


@inline
def node_at(i, j, node, cdf, sums, lo_of, mid_of, hi_of, stretch12, squash, restretch, weights, groups, final,
            apm_node, apm_byte, apm_o2, apm_o3, byte_rows, contexts, dims, x, sets_p, sets_st, p_mix, cells, reach):
    """One node of `_tree_at` (stream i, column j): its 16-bit P(bit 1), its stages' state
    written at [i, j]. Also the body of Bob's walk (coding.compiled.walk_tree). dims: the byte
    orders and word rows among the count rows (the reach), the hashed APMs' bits."""
    K = sums.shape[2]
    n_in = 2 * K + 3
    orders, words = dims[0], dims[1]
    lo, mid, hi = lo_of[node], mid_of[node], hi_of[node]
    top = cdf[i, hi]
    x[i, j, 0] = stretch12[_split12(top - cdf[i, mid], top - cdf[i, lo])]
    reached, one_side, words_seen = 0, 0, 0
    for k in range(K):
        left, middle = sums[i, lo, k], sums[i, mid, k]
        n0 = middle - left
        n1 = sums[i, hi, k] - middle
        kt = stretch12[_kt12(n0, n1)]
        x[i, j, 1 + k] = kt
        x[i, j, 1 + K + k] = kt if (n0 == 0 or n1 == 0) else 0
        if n0 + n1 > 0:
            if k < orders:
                reached = k + 1
                one_side = 1 if (n0 == 0 or n1 == 0) else 0
            elif k < orders + words:
                words_seen += 1
    x[i, j, n_in - 2] = x[i, j, reached] if reached > 0 else 0     # the longest order's KT input
    x[i, j, n_in - 1] = 256
    r = (reached * 2 + one_side) * (words + 1) + words_seen
    reach[i, j] = r
    sets = sets_p.shape[0]
    mixed = 0
    for s in range(sets):
        row = _set_row(groups, s, i, node, r)
        d = 0
        for c in range(n_in):
            d += x[i, j, c] * weights[row, c]
        at = _squash_at(d >> 16)
        sets_p[s, i, j] = squash[at]
        sets_st[s, i, j] = restretch[at]
        mixed += restretch[at] * final[(groups[0, i] + node) * sets + s]
    at = _squash_at(mixed >> 16)
    pm = squash[at]
    st = restretch[at]
    p_mix[i, j] = pm
    pos = (st + 2048) * 32
    p_node = _apm_at(apm_node, node, pos, cells, 0, i, j)
    p_byte = _apm_at(apm_byte, byte_rows[i] + node, pos, cells, 1, i, j)
    p_o2 = _apm_at(apm_o2, _hashed_row(contexts[0, i], node, dims[2]), pos, cells, 2, i, j)
    p_o3 = _apm_at(apm_o3, _hashed_row(contexts[1, i], node, dims[3]), pos, cells, 3, i, j)
    return min(max((pm * 32 + p_node + 2 * p_byte + 3 * p_o2 + 2 * p_o3 + 5) // 10, 1), 65535)


def _tree_at(nodes, p16, cdf, sums, lo_of, mid_of, hi_of, stretch12, squash, restretch, weights, groups, final,
             apm_node, apm_byte, apm_o2, apm_o3, byte_rows, contexts, dims, x, sets_p, sets_st, p_mix, cells, reach):
    """TreeMixer._at: the 16-bit P(bit 1) at `nodes` (n, m) of each stream, and each stage's
    inputs and outputs for `update`: x (n, m, n_in), sets_p and sets_st (4, n, m), p_mix (n, m),
    cells (4, n, m), reach (n, m). weights: the four sets' int32 rows in one (R, n_in) array, the
    kind set's first; groups (4, n): each stream's row for node 0 in each set (the kind set's is
    also its final mixer's row; the reach set's is its first, reach 0); byte_rows (n,): the byte
    APM's context for node 0 (byte before * NODES); contexts (2, n): the two and three bytes
    before, which the hashed APMs read."""
    n, m = nodes.shape
    for i in range(n):
        for j in range(m):
            p16[i, j] = node_at(i, j, nodes[i, j], cdf, sums, lo_of, mid_of, hi_of, stretch12, squash, restretch,
                                weights, groups, final, apm_node, apm_byte, apm_o2, apm_o3, byte_rows, contexts, dims,
                                x, sets_p, sets_st, p_mix, cells, reach)


@inline
def _learn(table, cells, targets, rate):
    """mixer.learn: each cell moves 1/2**rate of the way toward the mean of its targets (floor
    division of the summed gaps, then rounded to the nearest step), each distinct cell once, from
    its value before this call."""
    order = np.argsort(cells, kind="mergesort")
    t = 0
    total = cells.shape[0]
    while t < total:
        cell = cells[order[t]]
        before = np.int64(table[cell])
        gap = 0
        u = t
        while u < total and cells[order[u]] == cell:
            gap += targets[order[u]] - before
            u += 1
        table[cell] = before + (((gap // (u - t)) + (1 << (rate - 1))) >> rate)
        t = u


@inline
def _step_scale(u, early, early_gain, late_decay, floor):
    """TreeMixer.step_scale for one row that has had `u` updates: its step, in 1/64."""
    if u < early:
        return 64 + (early_gain * (early - u)) // early
    return max(floor, 64 - (u - early) // late_decay)


def _tree_update(x, nodes, bits, sets_p, sets_st, p_mix, cells, reach, weights, updates, groups, lr, early, early_gain,
                 late_decay, late_floor, final_floor, shift, w_max, final, final_lr, apms, apm_rate):
    """TreeMixer.update on the path's nodes (n, 8): each weight set from its own error, a row's
    step scaled by its update count before this position (larger over its first updates, smaller
    after), rows clipped to +-w_max; the final mixer from the mixture's error, scaled by its kind
    row's count after them (clipped by the caller, as the definition clips it whole); every
    step rounded to the nearest; the APM cells chosen on the path learn their bits (apms: the
    four tables, in the order of `cells`)."""
    n, m = nodes.shape
    n_in = x.shape[2]
    sets = sets_p.shape[0]
    half = 1 << (shift - 1)
    err = np.empty((n, m), dtype=np.int64)
    for s in range(sets):
        for i in range(n):
            for j in range(m):
                row = _set_row(groups, s, i, nodes[i, j], reach[i, j])
                e = ((bits[i, j] << 12) - sets_p[s, i, j]) * lr[s]
                err[i, j] = (e * _step_scale(updates[row], early, early_gain, late_decay, late_floor)) >> 6
        for i in range(n):
            for j in range(m):
                row = _set_row(groups, s, i, nodes[i, j], reach[i, j])
                updates[row] += 1
                e = err[i, j]
                for c in range(n_in):
                    weights[row, c] += (x[i, j, c] * e + half) >> shift
        for i in range(n):
            for j in range(m):
                row = _set_row(groups, s, i, nodes[i, j], reach[i, j])
                for c in range(n_in):
                    weights[row, c] = min(max(weights[row, c], -w_max), w_max)
    for i in range(n):
        for j in range(m):
            row = groups[0, i] + nodes[i, j]
            e = ((bits[i, j] << 12) - p_mix[i, j]) * final_lr
            e = (e * _step_scale(updates[row], early, 0, late_decay, final_floor)) >> 6
            at = row * sets
            for s in range(sets):
                final[at + s] += (sets_st[s, i, j] * e + half) >> shift
    targets = (bits * 65535).reshape(-1)
    for a in range(len(apms)):
        _learn(apms[a], cells[a].reshape(-1), targets, apm_rate)


def _count_sums(counts, out):
    """TreeMixer._sums: cumulative counts of counts (n, K, 256), laid out (n, 257, K) int32: a
    node's edges are then a few cache lines for all K rows, not one line per row."""
    n, K, V = counts.shape
    for i in range(n):
        for k in range(K):
            total = 0
            out[i, 0, k] = 0
            for b in range(V):
                total += counts[i, k, b]
                out[i, b + 1, k] = total


tree_at = compiled(_tree_at)
count_sums = compiled(_count_sums)
tree_update = compiled(_tree_update)


# --- the count tables (ngram.ContextCounts.update and lookup, ngram.trust_index) -------------------
@inline
def _row_of(check, slot, other, want):
    """ContextCounts._find for one context: its home row, the other row of its pair, or -1."""
    if check[slot] == want:
        return slot
    if check[other] == want:
        return other
    return -1


def _count_update(table, check, total, top, slots, checks, pair, symbols, limit, rescale):
    """ContextCounts.update's table work for one position: slots and checks (n, K) of the
    streams coded, symbols (n,). In the definition's three phases: find every context's row;
    a context without one claims the emptier row of its pair (zeroed; two claims on one row:
    the first in stream order wins) and every context is found again, so one whose row was just
    taken is not counted now; then every counted row whose top count passed `limit` is rescaled
    (each count x to x - (x >> rescale)) until it no longer does, and counts its symbol."""
    n, K = slots.shape
    rows = np.empty((n, K), dtype=np.int64)
    victims = np.empty(n * K, dtype=np.int64)
    owners = np.empty(n * K, dtype=np.int64)
    claims = 0
    for i in range(n):
        for k in range(K):
            slot = slots[i, k]
            other = slot ^ pair[k]
            rows[i, k] = _row_of(check, slot, other, checks[i, k])
            if rows[i, k] < 0:
                victims[claims] = other if total[slot] > total[other] else slot
                owners[claims] = i * K + k
                claims += 1
    if claims:
        order = np.argsort(victims[:claims], kind="mergesort")
        last = -1
        for t in range(claims):
            victim = victims[order[t]]
            if victim != last:          # the first claim on a row (stable sort: stream order)
                owner = owners[order[t]]
                table[victim, :] = 0
                total[victim] = 0
                top[victim] = 0
                check[victim] = checks[owner // K, owner % K]
                last = victim
        for i in range(n):
            for k in range(K):
                slot = slots[i, k]
                rows[i, k] = _row_of(check, slot, slot ^ pair[k], checks[i, k])
    for i in range(n):
        for k in range(K):
            row = rows[i, k]
            if row < 0:
                continue
            while top[row] > limit:                # then no count can pass 255 in this update
                s = 0
                for b in range(table.shape[1]):
                    table[row, b] -= table[row, b] >> rescale
                    s += table[row, b]
                top[row] -= top[row] >> rescale
                total[row] = s
    for i in range(n):
        symbol = symbols[i]
        for k in range(K):
            row = rows[i, k]
            if row >= 0:
                table[row, symbol] += 1
                total[row] += 1
                if table[row, symbol] > top[row]:
                    top[row] = table[row, symbol]


def _count_rows(table, check, slots, checks, pair, out):
    """ContextCounts.lookup's rows: each context's counts (n, K, 256) into `out`, zeros where
    it has no row."""
    n, K = slots.shape
    for i in range(n):
        for k in range(K):
            slot = slots[i, k]
            row = _row_of(check, slot, slot ^ pair[k], checks[i, k])
            if row < 0:
                for b in range(out.shape[2]):
                    out[i, k, b] = 0
            else:
                for b in range(out.shape[2]):
                    out[i, k, b] = table[row, b]


def _trust_index(counts, rows, n_buckets, purity, index):
    """ngram.trust_index of rows `rows` of counts (m, K, 256): the trust index (m, R) from the
    row's total (its bit length, capped) and the top count's share."""
    m = counts.shape[0]
    R = rows.shape[0]
    V = counts.shape[2]
    for i in range(m):
        for r in range(R):
            k = rows[r]
            total = 0
            top = 0
            for b in range(V):
                c = counts[i, k, b]
                total += c
                if c > top:
                    top = c
            bucket = 0
            t = total
            while t:
                bucket += 1
                t >>= 1
            bucket = min(bucket, n_buckets - 1)
            level = min((top * (purity - 1)) // max(total, 1), purity - 2)
            if top == total and total > 0:
                level = purity - 1
            index[i, r] = (bucket * purity + level) + r * n_buckets * purity


count_update = compiled(_count_update)
count_rows = compiled(_count_rows)
trust_index = compiled(_trust_index)


# --- the network's fixed-order sums and fixed-point grids (portable.tree_sum, exact._grid) ------
# Additions only: a compiled loop cannot contract them into an FMA, so each is the same IEEE add.
@inline
def _half(n):
    """Half the power of two at or above n: a tree sum's first level pairs term i with i + half."""
    size = 1
    while size < n:
        size <<= 1
    return size // 2


@inline
def _fold(buf, half):
    """A tree sum's upper levels: buf[:half] holds the first level's terms; add the upper half
    onto the lower half until one is left, buf[0] (portable.tree_sum's levels)."""
    level = half
    while level > 1:
        level //= 2
        for i in range(level):
            buf[i] = buf[i] + buf[i + level]
    return buf[0]


@inline
def _fold_rows(buf, half):
    """_fold for rows of terms, buf (half, m): the same levels, every column at once."""
    level = half
    while level > 1:
        level //= 2
        for i in range(level):
            for j in range(buf.shape[1]):
                buf[i, j] = buf[i, j] + buf[i + level, j]


def _tree_sum_first(x, zero, out):
    """portable.tree_sum over the first axis of x (n, m), n >= 1, into out (m,): the pairwise
    tree of a zero-padded power of two, term i added to term i + half at each level; a term
    whose partner is padding is added to `zero` (x + 0, as the definition does)."""
    n, m = x.shape
    if n == 1:
        for j in range(m):
            out[j] = x[0, j]
        return
    half = _half(n)
    buf = np.empty((half, m), dtype=x.dtype)
    for i in range(n - half):
        for j in range(m):
            buf[i, j] = x[i, j] + x[i + half, j]
    for i in range(n - half, half):
        for j in range(m):
            buf[i, j] = x[i, j] + zero[0]
    _fold_rows(buf, half)
    for j in range(m):
        out[j] = buf[0, j]


def _tree_sum_last(x, zero, out):
    """portable.tree_sum over the last axis of x (r, n), n >= 1, into out (r,): the same tree
    per row."""
    r, n = x.shape
    half = _half(n)
    buf = np.empty(max(half, 1), dtype=x.dtype)
    for row in range(r):
        if n == 1:
            out[row] = x[row, 0]
            continue
        for i in range(n - half):
            buf[i] = x[row, i] + x[row, i + half]
        for i in range(n - half, half):
            buf[i] = x[row, i] + zero[0]
        out[row] = _fold(buf, half)


@inline
def _exponent(top_bits):
    """np.frexp's exponent of a non-negative float32 given by its bits (0 for 0)."""
    e = top_bits >> 23
    if e:
        return e - 126
    mantissa = top_bits & 0x7FFFFF
    n = 0
    while mantissa:
        n += 1
        mantissa >>= 1
    return n - 149 if n else 0


def _grid_last(x, x_bits, bits, out):
    """exact._grid along the last axis of float32 x (b, r, K) into float64 out: each row rounded
    to multiples of 2**g, g from the frexp exponent of its largest |entry|, by adding and
    subtracting 1.5 * 2**(52 + exponent - bits). The largest |entry| is found on the bits
    (x_bits: x viewed as int32; for floats >= 0 their order is the integers'), a reduction that
    vectorizes. False (out unfinished) if x is not finite: the caller then runs the definition."""
    b, r, K = x.shape
    for t in range(b):
        for i in range(r):
            top = 0
            for j in range(K):
                a = x_bits[t, i, j] & 0x7FFFFFFF
                top = a if a > top else top
            if top >= 0x7F800000:               # an infinity or a NaN
                return False
            magic = math.ldexp(1.5, 52 + _exponent(top) - bits)
            for j in range(K):
                out[t, i, j] = (np.float64(x[t, i, j]) + magic) - magic
    return True


def _grid_columns(x, bits, out):
    """exact._grid along axis -2 of float32 x (b, K, N) into float64 out: each column of each
    matrix rounded to its own grid, as in _grid_last; read row by row (x is row-major)."""
    b, K, N = x.shape
    top = np.empty(N, dtype=np.float64)
    magic = np.empty(N, dtype=np.float64)
    for t in range(b):
        top[:] = 0.0
        finite = True
        for j in range(K):
            for c in range(N):
                a = abs(np.float64(x[t, j, c]))
                finite &= a <= 3.5e38
                top[c] = a if a > top[c] else top[c]
        if not finite:
            return False
        for c in range(N):
            magic[c] = math.ldexp(1.5, 52 + math.frexp(top[c])[1] - bits)
        for j in range(K):
            for c in range(N):
                out[t, j, c] = (np.float64(x[t, j, c]) + magic[c]) - magic[c]
    return True


tree_sum_first = compiled(_tree_sum_first)
tree_sum_last = compiled(_tree_sum_last)
grid_last = compiled(_grid_last)
grid_columns = compiled(_grid_columns)


def _mix(w, counts, strides, rows, table, zero, out):
    """portable.mix: out[b, s, v] = the tree sum over r of the float32 products w[b, s, r] *
    table[counts of row rows[r] at (b, s), byte v], each product rounded, then added pairwise as
    tree_sum adds them. counts is flat uint8: position (b, s) starts at b * strides[0] + s *
    strides[1], its rows of V follow contiguously (so the loops over v are unit-stride)."""
    B, S, R = w.shape
    V = out.shape[2]
    half = _half(R)
    buf = np.empty((max(half, 1), V), dtype=table.dtype)
    for b in range(B):
        for s in range(S):
            at = b * strides[0] + s * strides[1]
            if R == 1:
                ri = counts[at + rows[0] * V:at + (rows[0] + 1) * V]
                for v in range(V):
                    out[b, s, v] = w[b, s, 0] * table[ri[v]]
                continue
            for i in range(R - half):
                wi, wj = w[b, s, i], w[b, s, i + half]
                ri = counts[at + rows[i] * V:at + (rows[i] + 1) * V]   # slices: no wraparound checks
                rj = counts[at + rows[i + half] * V:at + (rows[i + half] + 1) * V]
                for v in range(V):
                    buf[i, v] = wi * table[ri[v]] + wj * table[rj[v]]
            for i in range(R - half, half):
                wi = w[b, s, i]
                ri = counts[at + rows[i] * V:at + (rows[i] + 1) * V]
                for v in range(V):
                    buf[i, v] = wi * table[ri[v]] + zero[0]
            _fold_rows(buf, half)
            for v in range(V):
                out[b, s, v] = buf[0, v]


def _mix_grad(g, counts, strides, rows, table, zero, out):
    """portable.mix's backward in w: out[b, s, r] = the tree sum over v of the float32 products
    g[b, s, v] * table[counts of row rows[r] at (b, s), byte v] (counts flat, as in _mix)."""
    B, S, V = g.shape
    R = out.shape[2]
    half = _half(V)
    buf = np.empty(max(half, 1), dtype=table.dtype)
    for b in range(B):
        for s in range(S):
            for r in range(R):
                at = b * strides[0] + s * strides[1] + rows[r] * V
                row = counts[at:at + V]
                if V == 1:
                    out[b, s, r] = g[b, s, 0] * table[row[0]]
                    continue
                for i in range(V - half):
                    buf[i] = g[b, s, i] * table[row[i]] + g[b, s, i + half] * table[row[i + half]]
                for i in range(V - half, half):
                    buf[i] = g[b, s, i] * table[row[i]] + zero[0]
                out[b, s, r] = _fold(buf, half)


mix = compiled(_mix)
mix_grad = compiled(_mix_grad)


# --- the network's exp and LayerNorm (portable.exp, portable.layer_norm_np) -----------------------
def _exp(x, c, pow2, out):
    """portable.exp of a flat float32 array, the same float32 operations in the same order:
    c = (lo, hi, 1/ln2, ln2 hi, ln2 lo, P0..P5, 1, 1.5 * 2**23), float32 (a Python float would
    widen a step to float64). rint is x + 1.5 * 2**23 - 1.5 * 2**23 (round half to even, exact
    for |x| < 2**22); ldexp(p, k) is float64(p) * 2**k from pow2 (2**-150 .. 2**128), exact,
    then one rounding to float32, as ldexpf rounds. Two loops, so that the first vectorizes."""
    n = x.shape[0]
    ks = np.empty(n, dtype=np.int64)
    lo, hi, inv, ln2_hi, ln2_lo, magic, one = c[0], c[1], c[2], c[3], c[4], c[12], c[11]
    p0, p1, p2, p3, p4, p5 = c[5], c[6], c[7], c[8], c[9], c[10]
    for i in range(n):
        v = x[i]
        v = lo if v < lo else v                   # NaN stays NaN, as np.clip leaves it
        v = hi if v > hi else v
        k = (v * inv + magic) - magic
        r = v - k * ln2_hi
        r = r - k * ln2_lo
        p = r * p0
        p = (p + p1) * r
        p = (p + p2) * r
        p = (p + p3) * r
        p = (p + p4) * r
        p = p + p5
        p = p * (r * r)
        p = p + r
        out[i] = p + one
        ks[i] = np.int64(k) + 150 if k == k else 0
    for i in range(n):
        out[i] = np.float32(np.float64(out[i]) * pow2[ks[i]])


exp = compiled(_exp)


def _gelu(x, g, c, pow2, y, dy):
    """portable.gelu_np of a flat float32 array, its steps in its order: g = (sqrt(2/pi), a,
    3a, -2, 88, 1) as float32; the exp in between is _exp's."""
    n = x.shape[0]
    t = np.empty(n, dtype=np.float32)
    for i in range(n):
        v = x[i]
        u = (v + ((v * v) * v) * g[1]) * g[0]
        w = u * g[3]
        t[i] = g[4] if w > g[4] else w          # np.minimum: NaN stays NaN
    e = np.empty(n, dtype=np.float32)
    exp(t, c, pow2, e)
    for i in range(n):
        v = x[i]
        s = g[5] / (e[i] + g[5])
        du = ((v * v) * g[2] + g[5]) * g[0]
        y[i] = v * s
        dy[i] = s + ((v + v) * (s * (e[i] * s))) * du


gelu = compiled(_gelu)



@inline
def _row_tree(v, n, half, zero, buf):
    """tree_sum of v[:n] (half: half the power of two at or above n), through buf."""
    if n == 1:
        return v[0]
    for i in range(n - half):
        buf[i] = v[i] + v[i + half]
    for i in range(n - half, half):
        buf[i] = v[i] + zero
    return _fold(buf, half)


def _layer_norm(x, w, b, c, y, xhat, rstd):
    """portable.layer_norm_np over the last axis of x (r, n): c = (n, eps, 0, 1) as float32;
    xc = x - tree_sum(x) / n, rstd = 1 / sqrt(tree_sum(xc * xc) / n + eps), y = xc * rstd * w + b."""
    r, n = x.shape
    half = _half(n)
    buf = np.empty(max(half, 1), dtype=x.dtype)
    sq = np.empty(n, dtype=x.dtype)
    for row in range(r):
        mean = _row_tree(x[row], n, half, c[2], buf) / c[0]
        for j in range(n):
            v = x[row, j] - mean
            xhat[row, j] = v
            sq[j] = v * v
        inv = c[3] / np.sqrt(_row_tree(sq, n, half, c[2], buf) / c[0] + c[1])
        rstd[row] = inv
        for j in range(n):
            h = xhat[row, j] * inv
            xhat[row, j] = h
            y[row, j] = h * w[j] + b[j]


layer_norm = compiled(_layer_norm)


def _embedding_grad(idx, g, out):
    """portable._Embedding.backward: row idx[i] of float64 out (zeros) takes g[i] (n, dim),
    widened, one add at a time in the order of idx, as np.bincount adds its weights."""
    n, dim = g.shape
    for i in range(n):
        row = idx[i]
        for c in range(dim):
            out[row, c] += np.float64(g[i, c])


embedding_grad = compiled(_embedding_grad)



# --- the contexts' state after a byte (ngram.ContextCounts.update's rest) -----------------------
# Hashes are uint64 arithmetic that wraps, as numpy's does; every mixed expression is cast to one
# type first (in numba, uint64 with int64 gives float64).
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_WORD = np.uint64(0x100000001B3)
_STREAM_KEY = np.uint64(0x9E3779B1)
_SLASH = np.uint64(ord("/") + 1) * _WORD   # ngram._SLASH
_LOW56 = np.uint64((1 << 56) - 1)
_U8 = np.uint64(8)
_U255 = np.uint64(255)
_U1 = np.uint64(1)
_U2 = np.uint64(2)
_U0 = np.uint64(0)
# the structure kinds, numbered as ngram.STRUCTURE names them
SHAPE, COLUMN, RECORD, ALIGN, NEST, NEAR, NEAR_WORD, SKIP_WORD, WORD_MARK, MARK_GAP, LINE_COLUMN, INDIRECT = range(12)
# the shape context (ngram.Structure "shape"): the last SHAPE_RUNS runs of one byte class within
# SHAPE_BACK bytes, in text: where no byte of the last SHAPE_TEXT is of class NOT_TEXT
SHAPE_RUNS, SHAPE_BACK, SHAPE_TEXT, NOT_TEXT = 6, 32, 16, 15


@inline
def _known(ring, written, span, stride, place):
    """ngram.MatchModel._known for one place: (is it in its stream's ring, its byte or 0)."""
    if place < 0:
        return False, 0
    stream, at = place // stride, place % stride
    if at < written[stream] and at >= written[stream] - span:
        return True, np.int64(ring[stream, at & (span - 1)])
    return False, 0


@inline
def _extend(word, symbol, fold):
    """ngram._extend_word: a word's hash with one more byte, case folded."""
    return (word + np.uint64(fold[symbol]) + _U1) * _WORD


@inline
def _back(ring, pos, distance):
    """ngram.Structure._back for one stream: the byte `distance` back, 0 before its start."""
    where = pos - distance
    if distance > 0 and where >= 0:
        return ring[where & (ring.shape[0] - 1)]
    return 0


@inline
def _shape(ring, pos, h, shape):
    """ngram.Structure._shape for one stream; `shape` is the byte classes' column of ngram._SHAPE."""
    text = (h & _U255) < 128 and ((h >> _U8) & _U255) < 128
    for j in range(1, SHAPE_TEXT + 1):
        if not text or j > pos:
            break
        text = shape[_back(ring, pos, j)] != NOT_TEXT
    if not text:
        return (h >> _U8) & np.uint64(0xFFFF)
    mask = 0
    runs = 0
    length = 0
    for j in range(1, SHAPE_BACK + 1):
        if j > pos:
            break
        c = shape[_back(ring, pos, j)]
        if runs > 0 and c == mask & 15:
            if runs == 1:
                length += 1
            continue
        if runs == SHAPE_RUNS:
            break
        mask = mask << 4 | c
        runs += 1
        if runs == 1:
            length = 1
    v = np.uint64(mask << 3 | min(length, 7)) | np.uint64(runs) << np.uint64(40) | np.uint64(1) << np.uint64(44)
    return v << _U8 | (h & _U255)


def _advance(rows, symbols, history, word, prev, prev2, slots, checks, classes,
             masks, hashed, byte_shift, byte_offset, n_words, word_shift, word_offset,
             match_on, m_ring, m_where, m_written, m_place, m_run, m_min, m_mask, m_shift, m_stride, m_recover,
             kinds, shape_shift, shape_offset, s_ring, s_pos, s_line, s_above, s_last, s_gap, s_candidate,
             s_seen, s_record, s_depth, s_tag, s_in_tag, s_naming, s_indent, s_word, s_stream, s_before,
             s_marks, s_after_mark, s_first, s_follow, s_stack, s_open, s_cname, s_tkind, s_attr, void, max_record,
             confirm):
    """ContextCounts.update after the counts: history, the match model (MatchModel.update), the
    word hashes, the structure state (Structure.update) and the slots and checks of the streams
    coded (`rows`, in order); in the definition's phases where streams meet (the match model's
    shared table of places: every stream reads it before any writes, the first stream's write
    wins). classes (256, 6): letter, opens a word, bracket, continues a tag name, case fold, shape class."""
    n = rows.shape[0]
    n_orders = masks.shape[0]
    shape = classes[:, 5]
    for t in range(n):
        r = rows[t]
        history[r] = (history[r] << _U8) | np.uint64(symbols[t])
    if match_on:
        span = m_ring.shape[1]
        keys = np.empty(n, dtype=np.int64)
        full = np.empty(n, dtype=np.bool_)
        for t in range(n):                      # the guesses, read before any ring is written
            r = rows[t]
            ok, byte = _known(m_ring, m_written, span, m_stride, m_place[r])
            hit = ok and byte == symbols[t]
            recover = ok and not hit and m_run[r] >= m_recover
            m_run[r] = m_run[r] + 1 if hit else (1 if recover else 0)
            m_place[r] = m_place[r] + 1 if (hit or recover) else -1
        for t in range(n):
            r = rows[t]
            m_ring[r, m_written[r] & (span - 1)] = symbols[t]
            m_written[r] += 1
        for t in range(n):                      # where did this context occur (before any write)
            r = rows[t]
            full[t] = m_written[r] >= m_min
            keys[t] = np.int64(((history[r] & m_mask) * _GOLDEN) >> m_shift)
            if full[t] and m_place[r] < 0:
                place = m_where[keys[t]]
                found = place >= 0
                for back in range(1, m_min + 1):
                    if not found:
                        break
                    ok, byte = _known(m_ring, m_written, span, m_stride, place - back)
                    found = ok and np.uint64(byte) == ((history[r] >> (_U8 * np.uint64(back - 1))) & _U255)
                if found:
                    m_place[r] = place
                    m_run[r] = 1
        for t in range(n):                      # remember this occurrence: the first stream wins
            if full[t]:
                first = True
                for u in range(t):
                    if full[u] and keys[u] == keys[t]:
                        first = False
                        break
                if first:
                    r = rows[t]
                    m_where[keys[t]] = r * m_stride + m_written[r]
    for t in range(n):
        r = rows[t]
        sym = symbols[t]
        if n_words:
            letter, opens = classes[sym, 0] == 1, classes[sym, 1] == 1
            w = word[r]
            if not letter and w != _U0:
                prev2[r] = prev[r]
                prev[r] = w
            if letter or opens:
                word[r] = _extend(_U0 if opens else w, sym, classes[:, 4])
            else:
                word[r] = _U0
        if kinds.shape[0]:
            _structure_step(r, sym, classes, kinds, s_ring, s_pos, s_line, s_above, s_last, s_gap, s_candidate,
                            s_seen, s_record, s_depth, s_tag, s_in_tag, s_naming, s_indent, s_word, s_before,
                            s_marks, s_after_mark, s_first, s_follow, (s_stack, s_open, s_cname, s_tkind, s_attr, void),
                            (max_record, confirm))   # tuples: Python passes over 30 as *args, which numba cannot inline
        h = history[r]
        for k in range(n_orders):
            ctx = h & masks[k]
            product = ctx * _GOLDEN
            if hashed[k]:
                slots[r, k] = np.int64(product >> byte_shift[k]) + byte_offset[k]
                checks[r, k] = np.uint8((product >> (byte_shift[k] - _U8)) & _U255)
            else:
                slots[r, k] = np.int64(ctx) + byte_offset[k]
                checks[r, k] = 0
        for k in range(n_words):
            w, p = word[r], prev[r]
            if k == 0:
                ctx = w if w != _U0 else p * _WORD + _U1
            else:
                ctx = w * _WORD + p if w != _U0 else (p * _WORD + prev2[r]) * _WORD + _U2
            product = ctx * _GOLDEN
            slots[r, n_orders + k] = np.int64(product >> word_shift[k]) + word_offset[k]
            checks[r, n_orders + k] = np.uint8((product >> (word_shift[k] - _U8)) & _U255)
        base = n_orders + n_words
        for i in range(kinds.shape[0]):
            v = _structure_context(i, kinds[i], h, s_ring[r], s_pos[r], s_line[r], s_above[r], s_record[r],
                                   s_depth[r], s_tag[r], s_in_tag[r], s_naming[r], s_indent[r, 0], s_indent[r, 1],
                                   s_word[r],
                                   s_stream[r], s_before[r, 1], s_marks[r], s_after_mark[r], s_first[r],
                                   s_follow[r, np.int64(h & _U255)], shape,
                                   s_stack[r, s_open[r] - 1] if s_open[r] > 0 else _U0, s_tkind[r], s_attr[r])
            product = v * _GOLDEN
            slots[r, base + i] = np.int64(product >> shape_shift[i]) + shape_offset[i]
            checks[r, base + i] = np.uint8((product >> (shape_shift[i] - _U8)) & _U255)


@inline
def _structure_step(r, sym, classes, kinds, ring, pos_of, line, above, last, gap, candidate, seen, record,
                    depth, tag, in_tag, naming, indent, word, before, marks, after_mark, first, follow, markup,
                    record_rule):
    """Structure.update for one stream."""
    max_record, confirm = record_rule
    stack, n_open, cname, tkind, attr, void = markup
    nest = False
    words = False
    for i in range(kinds.shape[0]):
        nest = nest or kinds[i] == NEST
        words = words or kinds[i] == NEAR_WORD or kinds[i] >= SKIP_WORD
    pos = pos_of[r]
    lead = pos - line[r] == indent[r, 0]               # before this byte
    before_sym = ring[r, (pos - 1) & (ring.shape[1] - 1)] if pos > 0 else 0
    follow[r, before_sym] = ((follow[r, before_sym] << _U8) | np.uint64(sym)) & np.uint64(0xFFFF)
    ring[r, pos & (ring.shape[1] - 1)] = sym
    newline = sym == 10
    if newline:
        above[r] = line[r]
        line[r] = pos + 1
    distance = pos - last[r, sym] if last[r, sym] >= 0 else 0
    steady = distance == gap[r, sym] and distance >= 2 and distance <= max_record
    if steady and distance == candidate[r]:
        seen[r] += 1
    elif steady:
        seen[r] = 1
    if steady:
        candidate[r] = distance
    if seen[r] >= confirm:
        record[r] = candidate[r]
    gap[r, sym] = distance
    last[r, sym] = pos
    pos_of[r] = pos + 1
    if nest:
        blank = sym == 32 or sym == 9
        if newline:
            indent[r, 1] = indent[r, 0]
        indent[r, 0] = 0 if newline else indent[r, 0] + (1 if (lead and blank) else 0)
        depth[r] = max(depth[r] + classes[sym, 2], 0)
        opens = sym == 60
        continues = naming[r] == 1 and classes[sym, 3] == 1
        if opens:
            tag[r] = _U0
            cname[r] = _SLASH
            tkind[r] = 0
        elif continues:
            if tkind[r] == 0:
                tkind[r] = 2 if sym == 47 else (1 if classes[sym, 0] == 1 else 3)
            tag[r] = (tag[r] + np.uint64(sym) + _U1) * _WORD
            if tkind[r] == 1:
                cname[r] = (cname[r] + np.uint64(sym) + _U1) * _WORD
        naming[r] = 1 if (opens or continues) else 0
        if opens:
            in_tag[r] = 1
            attr[r] = _U0
        elif sym == 61 and in_tag[r] == 1 and tkind[r] == 1 and word[r] != _U0:   # an attribute's "="
            attr[r] = word[r]
        elif sym == 62:
            pushes = in_tag[r] == 1 and tkind[r] == 1 and before_sym != 47   # an opening tag, not "/>"
            if pushes:
                for j in range(void.shape[0]):                 # nor an HTML element like "<br>"
                    pushes = pushes and void[j] != cname[r]
            if pushes:
                if n_open[r] == stack.shape[1]:               # full: the outermost is forgotten
                    for j in range(stack.shape[1] - 1):
                        stack[r, j] = stack[r, j + 1]
                    n_open[r] -= 1
                stack[r, n_open[r]] = cname[r]
                n_open[r] += 1
            elif in_tag[r] == 1 and tkind[r] == 2:
                for j in range(n_open[r] - 1, -1, -1):
                    if stack[r, j] == tag[r]:
                        n_open[r] = j
                        break
            in_tag[r] = 0
            tkind[r] = 0
    if words:
        letter = classes[sym, 0] == 1
        w = word[r]
        ends = not letter and w != _U0
        if ends:
            before[r, 1] = before[r, 0]
            before[r, 0] = w
        if not letter and sym != 32 and sym != 10 and sym != 9:
            marks[r] = ((marks[r] << _U8) | np.uint64(sym)) & np.uint64(0xFFFF)
            after_mark[r] = pos_of[r]
        if newline:
            first[r] = _U0
        elif ends and first[r] == _U0:
            first[r] = w
        word[r] = _extend(w, sym, classes[:, 4]) if letter else _U0


@inline
def _structure_context(i, kind, h, ring, pos, line, above, record, depth, tag, in_tag, naming, indent, indent_above,
                       word, stream, before1, marks, after_mark, first, follow, shape, inner, tkind, attr):
    """Structure.contexts for one stream and kind (the i-th of the configuration's kinds)."""
    if kind == SHAPE:
        v = _shape(ring, pos, h, shape)
    elif kind == COLUMN:
        col = pos - line
        width = line - above
        up = _back(ring, pos, width) if col < width else 256
        v = np.uint64((min(col, 255) << 9) | up)
    elif kind == RECORD:
        v = np.uint64((min(record, 0xFFFF) << 18) | (_back(ring, pos, record) << 9) | _back(ring, pos, 2 * record))
    elif kind == ALIGN:
        v = np.uint64(((pos & 3) << 8) | _back(ring, pos, 4))
    elif kind == NEST:
        lead = (min(indent_above, 63) << 16 | np.int64(marks & _U255) << 22) if pos - line == indent else 0
        small = np.uint64((min(depth, 15) << 12) | (in_tag << 11) | (naming << 10) | (min(indent, 63) << 4) | lead)
        key = tag + inner * _STREAM_KEY if (naming == 1 and tkind == 2) else (inner if in_tag == 0 else tag + attr * _WORD)
        v = (((key * _WORD) ^ small) << _U8) | (h & _U255)
    elif kind == SKIP_WORD or kind == WORD_MARK:
        other = before1 if kind == SKIP_WORD else marks & _U255
        v = ((other + np.uint64(i)) * _WORD ^ word) & _LOW56
    elif kind == MARK_GAP or kind == LINE_COLUMN:
        if kind == MARK_GAP:
            other, near = marks, np.uint64(min(pos - after_mark, 15))
        else:
            other, near = first, np.uint64(min(pos - line, 63))
        v = ((other + np.uint64(i)) * _WORD ^ ((near << _U8) | (h & _U255))) & _LOW56
    elif kind == INDIRECT:
        v = (follow << _U8) | (h & _U255)
    else:
        key = h & np.uint64(0xFFFF) if kind == NEAR else word
        v = (key * _STREAM_KEY ^ stream) & _LOW56
    return v | (np.uint64(i + 1) << np.uint64(56))


def _match_row(m_ring, m_written, m_place, m_run, m_stride, out):
    """MatchModel.lookup into out (streams, 256): the guessed byte counts the run (capped)."""
    span = m_ring.shape[1]
    for r in range(out.shape[0]):
        for b in range(out.shape[1]):
            out[r, b] = 0
        ok, byte = _known(m_ring, m_written, span, m_stride, m_place[r])
        if ok:
            out[r, byte] = min(m_run[r], 255)


advance = compiled(_advance)
match_row = compiled(_match_row)


# --- the network's hashed contexts (model.HashedContexts.ids) -------------------------------------
def _hashed_ids(padded, orders, mul, mask, shift, out):
    """HashedContexts.ids: out (B, S, R) the table row of order orders[r]'s context at each of
    the S positions that end padded (B, span + S); each hash starts at its order and takes in
    the tokens 0, 1, ..., k - 1 places back, int64 throughout as in the definition."""
    B, S, R = out.shape
    span = padded.shape[1] - S
    for b in range(B):
        for s in range(S):
            for r in range(R):
                k = orders[r]
                h = np.int64(k)
                for j in range(k):
                    h = (h * mul + padded[b, span + s - j] + 1) & mask
                out[b, s, r] = ((h * mul) & mask) >> shift


hashed_ids = compiled(_hashed_ids)

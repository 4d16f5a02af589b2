"""Byte-tree mixing and secondary estimation: the paq half of the prediction, in integers.

The GPT and its CountMixer give one distribution over 256 bytes, learned once per optimizer
step. paq's lesson is that a mixture should learn at every position, per binary decision, and
that a last adaptive map (SSE, here APM) repairs what the mixture still gets wrong in a small
context. So the twin sees each byte as 8 binary decisions down a tree (node 1 the root, node
j's children 2j and 2j+1, leaf 256 + byte) and, for every node of every stream:

  1. inputs    stretch(p) of the node's split under the model's distribution, under each
               count row (order k's counts of the bytes below each child, KT estimate), the
               same again where that row has seen only one side (a deterministic context),
               and a bias;
  2. mix       two dot products with integer weights, one set kept per node and one per node
               and kind of the byte before (space, letter, digit, ...), each squashed back to
               a probability; a final mixer per node and kind weighs the two (`TreeMixer`);
  3. refine    two APMs map (context, stretch(p)) to a better probability by interpolating
               in a learned table: one keyed by the node, one by the node and the byte before;
  4. split     the nodes' probabilities become 24-bit integer frequencies top-down, every byte
               at least 1, so the coder gets a cdf as it always did (`split_to_cdf`);
  5. learn     once the byte is known, only the 8 nodes on its path update their weights (each
               set from its own error, the final mixer from the mixture's) and APM cells, by
               integer steps summed with np.add.at (order-free, so exact).

Alice knows the byte before she codes it, and a node's probability and mass depend only on the
node and its ancestors, so she computes the 8 nodes on its path and its slice of the total
(`slices`): the same integers as steps 1-4 for all 255 nodes. Bob must search the tree, so he
computes it whole (`predict`).

Everything is integer numpy: the same bits on every CPU (docs/determinism.md). Measurements:
docs/results.md.
"""
from __future__ import annotations

import numpy as np

from .config import FREQ_BITS, VOCAB

# --- the logistic domain: lpaq1's integer squash and its inverse ------------------------------
_KNOTS = (1, 2, 3, 6, 10, 16, 27, 45, 73, 120, 194, 310, 488, 747, 1101, 1546, 2047, 2549, 2994,
          3348, 3607, 3785, 3901, 3975, 4022, 4050, 4068, 4079, 4085, 4089, 4092, 4093, 4094)
ST_MAX = 2047                       # stretch(p) = ln(p / (1 - p)) * 256, within -2047..2047


def _squash_scalar(d: int) -> int:
    """4096 / (1 + e^(-d/256)) by linear interpolation between 33 knots: a 12-bit probability."""
    if d > ST_MAX:
        return 4095
    if d < -ST_MAX:
        return 1
    w = d & 127
    i = (d >> 7) + 16
    return (_KNOTS[i] * (128 - w) + _KNOTS[i + 1] * w + 64) >> 7


_SQUASH = np.array([_squash_scalar(d) for d in range(-ST_MAX, ST_MAX + 1)], dtype=np.int64)


def _stretch_table() -> np.ndarray:
    """The inverse of squash on 12-bit probabilities: the smallest d with squash(d) >= p."""
    table = np.full(4096, ST_MAX, dtype=np.int64)
    done = 0
    for d in range(-ST_MAX, ST_MAX + 1):
        v = _squash_scalar(d)
        table[done:v + 1] = d
        done = max(done, v + 1)
    return table


_STRETCH = _stretch_table()


def squash(d: np.ndarray) -> np.ndarray:
    """Stretched values (any integers) -> 12-bit probabilities 1..4095."""
    return _SQUASH.take(np.clip(d, -ST_MAX, ST_MAX) + ST_MAX)


_STRETCH32 = _STRETCH.astype(np.int32)


def stretch(p12: np.ndarray) -> np.ndarray:
    """12-bit probabilities 0..4095 -> -2047..2047."""
    return _STRETCH32.take(p12)


_RESTRETCH = _STRETCH.take(_SQUASH)       # stretch(squash(d)) for d in -2047..2047: one lookup


def _squash_index(d: np.ndarray) -> np.ndarray:
    """Stretched values (int64, any) -> their index into _SQUASH and _RESTRETCH, in place."""
    d += ST_MAX
    return np.clip(d, 0, 2 * ST_MAX, out=d)


# --- the byte tree -----------------------------------------------------------------------------
NODES = VOCAB - 1                                   # internal nodes 1..255, stored at index node-1
_node = np.arange(1, VOCAB)
_depth = np.array([n.bit_length() - 1 for n in range(1, VOCAB)])
_width = VOCAB >> _depth                            # bytes below the node
LO = (_node - (1 << _depth)) * _width               # first byte below the node
MID = LO + _width // 2                              # first byte of its right child (bit 1)
HI = LO + _width
_SHIFTS = np.arange(8, 0, -1)


def path(symbols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 8) node indices (0-based) from the root down to each symbol, and the bit taken at each."""
    leaf = symbols.astype(np.int64)[:, None] + VOCAB
    return (leaf >> _SHIFTS) - 1, (leaf >> (_SHIFTS - 1)) & 1


def count_splits(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts (..., 256) -> (n0, n1) at every node (..., 255): the counts below each child,
    summed pairwise up the tree (node order is depth by depth, as the heap numbers them)."""
    sums = counts.astype(np.uint16)        # at most 256 * 255 < 2**16: the narrowest exact type
    left, right = [], []
    for depth in range(7, -1, -1):
        pairs = sums.reshape(sums.shape[:-1] + (1 << depth, 2))
        left.append(pairs[..., 0])
        right.append(pairs[..., 1])
        sums = pairs[..., 0] + pairs[..., 1]
    return np.concatenate(left[::-1], axis=-1), np.concatenate(right[::-1], axis=-1)


def kt_split(n0: np.ndarray, n1: np.ndarray) -> np.ndarray:
    """12-bit P(bit 1) = (n1 + 1/2) / (n0 + n1 + 1), the Krichevsky–Trofimov estimate, in 1..4095.
    One float64 division of exact integers (IEEE: correctly rounded everywhere), truncated."""
    q = n1.astype(np.float64)                   # (n1 + 1/2) * 4096 / (n0 + n1 + 1): the same exact
    q += 0.5                                    # operands, so the same correctly rounded quotient,
    q *= 4096.0                                 # in place (Bob computes it at all 255 nodes)
    den = (n0 + n1).astype(np.float64)
    den += 1.0
    q /= den
    p = q.astype(np.int32)
    return np.clip(p, 1, 4095, out=p)


def _split12(right: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """12-bit P(bit 1) = floor(4096 right / whole) in 1..4095, from one float64 division of
    exact integers (right < whole <= 2**25): a quotient that is not a whole number lies at
    least 2**-25 below the next one, far more than float64's rounding at 4096, so truncating
    it gives the integer floor on every CPU."""
    q = right.astype(np.float64)
    q *= 4096.0
    q /= whole
    p = q.astype(np.int32)
    return np.clip(p, 1, 4095, out=p)


def cdf_split(cdf: np.ndarray) -> np.ndarray:
    """12-bit P(bit 1) at every node of a quantized distribution (n, 257), in 1..4095."""
    return _split12(cdf[:, HI] - cdf[:, MID], cdf[:, HI] - cdf[:, LO])


_TOTAL = 1 << FREQ_BITS


def split_to_cdf(p16: np.ndarray) -> np.ndarray:
    """Node probabilities (n, 255), 16-bit P(bit 1) in 1..65535, to cumulative frequencies
    (n, 257) summing to 2**FREQ_BITS with every byte at least 1: the root's mass is split
    top-down in integers, so nothing is lost or rounded twice."""
    n = p16.shape[0]
    mass = np.empty((n, 2 * VOCAB), dtype=np.int64)     # column = node (1-based); leaves 256..511
    mass[:, 1] = _TOTAL - VOCAB
    for depth in range(8):                              # a level's nodes are contiguous columns,
        first, end = 1 << depth, 2 << depth             # their children the next level, in pairs
        parents = mass[:, first:end]
        right = (parents * p16[:, first - 1:end - 1]) >> 16
        children = mass[:, 2 * first:2 * end].reshape(n, first, 2)
        children[..., 1] = right
        np.subtract(parents, right, out=children[..., 0])
    leaves = mass[:, VOCAB:]
    leaves += 1
    cdf = np.zeros((n, VOCAB + 1), dtype=np.int64)
    np.cumsum(leaves, axis=1, out=cdf[:, 1:])
    return cdf


def learn(table: np.ndarray, cells: np.ndarray, targets: np.ndarray, rate: int) -> None:
    """Move each cell 1/2**rate of the way toward the mean of its targets. Several streams may
    hit one cell at one position: the mean (integer sums, floor division) keeps the step the
    same size however many did, and the result independent of their order."""
    uniq, inverse = np.unique(cells, return_inverse=True)
    gap = np.zeros(len(uniq), dtype=np.int64)
    np.add.at(gap, inverse, targets - table[cells])
    table[uniq] = table[uniq] + ((gap // np.bincount(inverse)) >> rate)   # stays in 0..65535


def _count_inputs(n0: np.ndarray, n1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A count row's two mixer inputs at a node: stretch of its KT split, and the same where the
    row has seen one side only (a deterministic context), else 0."""
    kt = stretch(kt_split(n0, n1))
    return kt, kt * ((n0 == 0) | (n1 == 0))


_EMPTY = int(stretch(kt_split(np.zeros(1), np.zeros(1)))[0])   # both inputs where a row saw nothing

# The kind of the byte before, which picks the mixer's second weight set: after a space, inside a
# word, after a digit or at a line's start, the same evidence deserves different trust.
KINDS = 9
_KIND = np.full(VOCAB, 7, dtype=np.int64)          # 7: other punctuation and control bytes
_KIND[ord(" ")], _KIND[ord("\n")] = 0, 1
_KIND[ord("a"):ord("z") + 1] = 2
_KIND[ord("A"):ord("Z") + 1] = 3
_KIND[ord("0"):ord("9") + 1] = 4
_KIND[0x80:0xC0] = 5                               # UTF-8 continuation bytes
_KIND[0xC0:] = 8                                   # UTF-8 lead bytes (a character's first)
_KIND[[ord(c) for c in ".,;:!?"]] = 6


def _count_dots(n0: np.ndarray, n1: np.ndarray, sets) -> list[np.ndarray]:
    """For each weight set (table, group) of `sets`, table (groups, NODES, n_in) float64 with the
    K count rows' weights in columns 1..K and their deterministic twins in K+1..2K, and group (n,)
    the stream's group: the sum over k of kt * table[g, node, 1 + k] + det * table[g, node,
    1 + K + k] at every node, (n, NODES) float64, the same exact integers as the dense products
    (terms below 2**36, sums below 2**53, so any order). Most nodes of most rows saw nothing
    below them (KT 1/2: both inputs _EMPTY), so that is added for every node at once and only
    the nodes that saw a byte are computed and corrected, once for all the sets."""
    n, K, _ = n0.shape
    seen = np.flatnonzero((n0 | n1) != 0)               # into (n, K, NODES); a bool mask is numpy's fast path
    kt, det = _count_inputs(n0.reshape(-1)[seen], n1.reshape(-1)[seen])
    kt, det = kt - _EMPTY, det - _EMPTY
    row, node = np.divmod(seen, NODES)                  # row = stream * K + k
    stream, k = np.divmod(row, K)
    at = stream * NODES + node
    out = []
    for table, group in sets:
        n_in = table.shape[2]
        dots = (table[:, :, 1:1 + 2 * K].sum(axis=2) * _EMPTY)[group]
        cell = ((group[stream] * NODES + node) * n_in + 1) + k   # the flat index of w_kt[g, node, k]
        flat = table.reshape(-1)
        fix = kt * flat.take(cell)
        fix += det * flat.take(cell + K)
        dots += np.bincount(at, weights=fix, minlength=n * NODES).reshape(n, NODES)
        out.append(dots)
    return out


class APM:
    """Adaptive probability map (paq's SSE): per context, 33 cells along the stretch axis, each
    a 16-bit probability. The output interpolates the two cells around stretch(p); learning
    moves the nearer one toward the coded bit. Cells start on the identity, so a fresh map
    changes nothing."""

    CELLS = 33
    RATE = 7            # a cell moves 1/128 of the way per update

    def __init__(self, contexts: int):
        start = squash((np.arange(self.CELLS) - 16) * 128) * 16
        # (contexts * 33,) 16-bit probabilities, stored as such: Bob reads 2 x 255 cells per
        # stream and position from the byte APM's 2 million, and the narrow table caches better
        self.table = np.tile(start, contexts).astype(np.uint16)
        self._cell = None

    def refine(self, st: np.ndarray, ctx: np.ndarray) -> np.ndarray:
        """st (n, NODES) stretched probabilities, ctx (n, NODES) contexts -> 16-bit probabilities."""
        pos = (st + 2048) * 32                              # st in -2047..2047: 32 .. 131040
        base = ctx * self.CELLS + (pos >> 12)
        w = pos & 4095
        self._cell = base + (w >> 11)                       # the nearer cell learns
        return (self.table.take(base) * (4096 - w) + self.table.take(base + 1) * w) >> 12

    def update(self, cells: np.ndarray, bits: np.ndarray) -> None:
        """The cells `refine` chose on the coded bytes' paths, (n, 8), learn their bits."""
        learn(self.table, cells.reshape(-1), (bits * 65535).reshape(-1), self.RATE)


class TreeMixer:
    """Mix the model's distribution with the count rows per binary decision, then refine (APM).

    Two weight sets see the same inputs: one per node, one per node and kind of the byte before
    (`_KIND`). Each alone would learn slowly or miss the byte before; a final mixer per node and
    kind weighs their two stretched outputs (paq's two-layer mixer). `predict` takes the cdf the model
    gives and the count rows of this position and returns the cdf to code with; `update` learns
    from the coded symbols of the same rows.
    """

    LR = (4, 5)         # weight step = stretch * error(12-bit) * LR[set] >> SHIFT
    FINAL_LR = 1        # the final mixer's step, the same way
    SHIFT = 14
    ONE = 1 << 16       # weight 1.0: the mixer starts out trusting the model alone
    W_MAX = 1 << 24     # |weight| bound: every dot product stays an exact integer in float64

    def __init__(self, n_rows: int):
        self.K = n_rows
        self.n_in = 2 * n_rows + 2                          # model, K rows, K deterministic rows, bias
        self.weights = np.zeros((NODES, self.n_in), dtype=np.int64)   # set 0: row = node
        self.weights[:, 0] = self.ONE
        self.by_kind = np.zeros((KINDS * NODES, self.n_in), dtype=np.int64)   # set 1: kind * NODES + node
        self.by_kind[:, 0] = self.ONE
        self.final = np.full((KINDS * NODES, 2), self.ONE // 2, dtype=np.int64)   # the two sets' outputs, by kind and node
        self.apm_node = APM(NODES)
        self.apm_byte = APM(NODES * VOCAB)
        self._inputs = self._p = self._sets = self._kind = None
        self._on_path = False               # whether the last prediction was `slices`' (path only)

    def predict(self, cdf: np.ndarray, counts: np.ndarray | None, prev: np.ndarray) -> np.ndarray:
        """cdf (n, 257) from quantize; counts (n, K, 256) uint8 or None; prev (n,) the byte
        before each position (0 at a stream's start) -> the cdf (n, 257) to code with."""
        K = self.K
        # the dot products in float64 on small integers: exact in any summation order, since
        # every partial sum is an integer below 2**53 (|weights| <= W_MAX)
        kind = _KIND[prev]
        groups = np.zeros(len(prev), dtype=np.int64), kind
        tables = [t.astype(np.float64).reshape(-1, NODES, self.n_in) for t in (self.weights, self.by_kind)]
        st = stretch(cdf_split(cdf))                                    # (n, NODES)
        dots = [st * w[g, :, 0] + 256.0 * w[g, :, -1] for w, g in zip(tables, groups)]
        splits = None
        if K:
            splits = count_splits(counts)                               # (n, K, NODES) each
            fixes = _count_dots(*splits, list(zip(tables, groups)))
            dots = [d + f for d, f in zip(dots, fixes)]
        self._inputs, self._kind = (st, splits), kind
        self._on_path = False
        p16 = self._refine(self._mix(dots, np.arange(NODES)), np.broadcast_to(np.arange(NODES), st.shape), prev)
        return split_to_cdf(p16)

    def slices(self, cdf: np.ndarray, counts: np.ndarray | None, prev: np.ndarray,
               symbols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What `predict` gives, at the coded `symbols` only: the slice [lo, hi) of each in the
        2**FREQ_BITS total (lo = cdf[symbol], hi = cdf[symbol + 1]), from the 8 nodes on its
        path. Every dot product is the same exact integer, every probability and mass the same."""
        K = self.K
        nodes, bits = path(symbols)                                     # (n, 8)
        rows = np.arange(len(symbols))[:, None]
        right = cdf[rows, HI[nodes]] - cdf[rows, MID[nodes]]
        x = np.empty(nodes.shape + (self.n_in,), dtype=np.int64)        # (n, 8, n_in): the path's inputs
        x[..., 0] = stretch(_split12(right, cdf[rows, HI[nodes]] - cdf[rows, LO[nodes]]))
        x[..., -1] = 256
        if K:
            sums = np.zeros(counts.shape[:-1] + (VOCAB + 1,), dtype=np.int32)
            np.cumsum(counts, axis=-1, dtype=np.int32, out=sums[..., 1:])  # (n, K, 257)
            at = (rows[:, :, None], np.arange(K)[None, :, None])
            lo, mid, hi = (edge[nodes][:, None, :] for edge in (LO, MID, HI))
            n0 = sums[at + (mid,)] - sums[at + (lo,)]                   # (n, K, 8)
            n1 = sums[at + (hi,)] - sums[at + (mid,)]
            kt, det = _count_inputs(n0, n1)
            x[..., 1:1 + K] = kt.transpose(0, 2, 1)
            x[..., 1 + K:-1] = det.transpose(0, 2, 1)
        self._inputs, self._kind = x, _KIND[prev]
        xf = x.astype(np.float64)
        dots = [np.einsum("ndi,ndi->nd", xf, table[cell].astype(np.float64))
                for table, cell in zip((self.weights, self.by_kind), (nodes, self._kind_rows(nodes)))]
        self._on_path = True
        p16 = self._refine(self._mix(dots, nodes), nodes, prev)
        mass = np.full(len(symbols), _TOTAL - VOCAB, dtype=np.int64)    # split_to_cdf, down one path
        below = np.zeros(len(symbols), dtype=np.int64)
        for d in range(8):
            take_right = bits[:, d] == 1
            right = (mass * p16[:, d]) >> 16
            below += np.where(take_right, mass - right, 0)               # the left child lies below
            mass = np.where(take_right, right, mass - right)
        lo = below + symbols                                             # every byte has 1 extra
        return lo, lo + mass + 1

    def _kind_rows(self, nodes: np.ndarray) -> np.ndarray:
        """Rows of `by_kind` and `final` for `nodes` (n, ...) of streams whose previous byte's kind
        is `self._kind` (n,)."""
        return self._kind[:, None] * NODES + nodes

    def _mix(self, dots: list[np.ndarray], nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The two sets' dot products at `nodes` -> the final mixer's 12-bit probability, and
        its stretch."""
        at = [_squash_index(d.astype(np.int64) >> 16) for d in dots]
        self._sets = [_SQUASH.take(i) for i in at]                      # each set's 12-bit probability
        s0, s1 = self._stretched = [_RESTRETCH.take(i) for i in at]     # stretch(squash(.))
        rows = self._kind_rows(nodes)
        final = self.final.reshape(-1)
        mixed = s0 * final.take(2 * rows)                               # the final mixer, (n, nodes)
        mixed += s1 * final.take(2 * rows + 1)
        at = _squash_index(mixed >> 16)
        return _SQUASH.take(at), _RESTRETCH.take(at)

    def _refine(self, mixed: tuple[np.ndarray, np.ndarray], nodes: np.ndarray, prev: np.ndarray) -> np.ndarray:
        """The mixture's 12-bit probabilities at `nodes` and their stretch -> 16-bit after the
        APMs, in 1..65535."""
        p_mix, st = mixed
        p_node = self.apm_node.refine(st, nodes)
        p_byte = self.apm_byte.refine(st, prev.astype(np.int64)[:, None] * NODES + nodes)
        self._p = p_mix
        return np.clip((p_mix * 16 + p_node + 2 * p_byte) >> 2, 1, 65535)   # 16-bit

    def update(self, symbols: np.ndarray) -> float:
        """Learn from the coded `symbols`; returns what they would have cost before SSE (bits)."""
        nodes, bits = path(symbols)                                     # (n, 8)
        rows = np.arange(len(symbols))[:, None]
        if self._on_path:               # already the path's: (n, 8, ...)
            x, p_mix, p_sets = self._inputs, self._p, self._sets
            s = np.stack(self._stretched, axis=-1)
            cells = [apm._cell for apm in (self.apm_node, self.apm_byte)]
        else:                           # all 255 nodes: take the path's
            st, splits = self._inputs
            p_mix = self._p[rows, nodes]
            s = np.stack([v[rows, nodes] for v in self._stretched], axis=-1)
            p_sets = [p[rows, nodes] for p in self._sets]
            cells = [apm._cell[rows, nodes] for apm in (self.apm_node, self.apm_byte)]
            x = np.empty(nodes.shape + (self.n_in,), dtype=np.int64)    # (n, 8, n_in): the path's inputs
            x[..., 0] = st[rows, nodes]
            x[..., -1] = 256
            if self.K:                  # the count inputs from the path's splits, (n, 8, K)
                n0, n1 = splits
                x[..., 1:1 + self.K], x[..., 1 + self.K:-1] = _count_inputs(n0[rows, :, nodes], n1[rows, :, nodes])
        by_kind = self._kind_rows(nodes)                                # (n, 8)
        for table, cell, p, lr in zip((self.weights, self.by_kind), (nodes, by_kind), p_sets, self.LR):
            err = ((bits << 12) - p) * lr                               # (n, 8): each set its own error
            np.add.at(table, cell, (x * err[..., None]) >> self.SHIFT)
            np.clip(table, -self.W_MAX, self.W_MAX, out=table)
        err = ((bits << 12) - p_mix) * self.FINAL_LR
        np.add.at(self.final, by_kind, (s * err[..., None]) >> self.SHIFT)
        np.clip(self.final, -self.W_MAX, self.W_MAX, out=self.final)
        self.apm_node.update(cells[0], bits)
        self.apm_byte.update(cells[1], bits)
        return float(-np.log2(np.where(bits == 1, p_mix, 4096 - p_mix) / 4096.0).sum())

    # --- checkpoints --------------------------------------------------------------------------
    def state(self) -> dict:
        return {"weights": self.weights.copy(), "by_kind": self.by_kind.copy(), "final": self.final.copy(),
                "apm_node": self.apm_node.table.astype(np.uint16), "apm_byte": self.apm_byte.table.astype(np.uint16)}

    def load(self, state: dict) -> None:
        for name, have in (("weights", self.weights), ("by_kind", self.by_kind), ("final", self.final),
                           ("apm_node", self.apm_node.table), ("apm_byte", self.apm_byte.table)):
            if tuple(state[name].shape) != have.shape:
                raise ValueError(f"tree mixer state {name} has shape {tuple(state[name].shape)}, not {have.shape}")
            have[:] = state[name]

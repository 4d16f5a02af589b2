"""Byte-tree mixing and secondary estimation: the paq half of the prediction, in integers.

The GPT and its CountMixer give one distribution over 256 bytes, learned once per optimizer
step. paq's lesson is that a mixture should learn at every position, per binary decision, and
that a last adaptive map (SSE, here APM) repairs what the mixture still gets wrong in a small
context. So the twin sees each byte as 8 binary decisions down a tree (node 1 the root, node
j's children 2j and 2j+1, leaf 256 + byte) and, for every node of every stream:

  1. inputs    stretch(p) of the node's split under the model's distribution, under each
               count row (order k's counts of the bytes below each child, KT estimate), the
               same again where that row has seen only one side (a deterministic context),
               the same again for the longest byte order that has seen the node, and a bias;
  2. mix       four dot products with integer weights, one set kept per node and kind of
               the byte before (space, letter, digit, ...), one per node and the byte before
               itself, one per node and shape (the match model's run, the kinds of the two
               bytes before), one per node and reach (the longest byte order whose row has
               seen the node, and the word rows that have), each squashed back to a
               probability; a final mixer per node and kind weighs the four (`TreeMixer`);
  3. refine    four APMs map (context, stretch(p)) to a better probability by interpolating
               in a learned table: keyed by the node, by the node and the byte before, and by
               a hash of the node with the two and with the three bytes before;
  4. code      each of the byte's 8 decisions is coded with its node's 16-bit P(bit 1), root
               first (the coder's `encode_bits` / `decode_bits`);
  5. learn     once the byte is known, only the 8 nodes on its path update their weights (each
               set from its own error, in larger steps over a row's first updates and smaller
               ones once it has learned; the final mixer from the mixture's) and APM cells, by
               integer steps rounded to the nearest and summed with np.add.at (order-free, so
               exact).

A node's probability depends only on the node and the position, never on its siblings, so no
one computes more than the nodes coded: Alice knows the byte and computes its path's 8 nodes at
once (`path`); Bob walks down, a level of every stream at a time, each step chosen by the bit
just decoded (`walk`); a watcher's twin computes the whole tree to show it (`predict`, with
`split_to_cdf` for the distribution). All three give the same integers at the same nodes.

Everything is integer numpy: the same bits on every CPU (docs/determinism.md); with numba, the
path's nodes and their learning run as compiled loops of the same integers (kernels.tree_at,
kernels.tree_update). Measurements: docs/results.md.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from . import kernels
from .config import FREQ_BITS, HASHED_APM_BITS, PROB_BITS, VOCAB, reaches

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


def _subtree(levels: int) -> tuple[np.ndarray, np.ndarray]:
    """A subtree of `levels` levels in heap order: each column's level below its root and its
    offset in that level, so node i's descendants are ((i + 1) << level) + offset - 1 (0-based)."""
    number = np.arange(1, 1 << levels)
    level = np.array([int(v).bit_length() - 1 for v in number])
    return level, number - (1 << level)


_SUBTREE = {levels: _subtree(levels) for levels in range(1, 9)}


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


def bit_cost(p16: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """What each binary decision costs in bits, -log2 of the probability of the bit taken
    (P(bit 1) = p16 / 2**PROB_BITS): the ideal length, float64, a report (never coded)."""
    return PROB_BITS - np.log2(np.where(bits == 1, p16, (1 << PROB_BITS) - p16).astype(np.float64))


def learn(table: np.ndarray, cells: np.ndarray, targets: np.ndarray, rate: int) -> None:
    """Move each cell 1/2**rate of the way toward the mean of its targets, rounded to the
    nearest step (floored, a cell stopped 2**rate - 1 short of 65535 but went down to 0). Several
    streams may hit one cell at one position: the mean (integer sums, floor division) keeps the
    step the same size however many did, and the result independent of their order."""
    uniq, inverse = np.unique(cells, return_inverse=True)
    gap = np.zeros(len(uniq), dtype=np.int64)
    np.add.at(gap, inverse, targets - table[cells])
    step = (gap // np.bincount(inverse) + (1 << (rate - 1))) >> rate
    table[uniq] = table[uniq] + step                                    # stays in 0..65535


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

# The shape, which picks the third weight set: how long the match model's guess has been right
# (log2 of its run, 0..8) and the kinds of the two bytes before. Inside a long repeat, or after
# ". " or "</", the same evidence deserves different trust again (paq's mixer contexts).
RUNS = 9
_RUN = np.array([int(run).bit_length() for run in range(256)], dtype=np.int64)   # a count 0..255 -> 0..8
SHAPES = RUNS * KINDS * KINDS


def reach(n0: np.ndarray, n1: np.ndarray, orders: int, words: int) -> tuple[np.ndarray, np.ndarray]:
    """The reach at each node, which picks the fourth weight set: the longest byte order whose
    row has seen the node's context (1 + its index among the first `orders` rows, 0 for none),
    whether that row saw one side only, and how many of the `words` word rows after them saw it.
    Where the long contexts know a node, their evidence deserves different trust than where only
    the short ones do (paq's mixer selector by order). Also that longest row's KT input (0 where
    no order saw the node), one more mixer input. n0, n1 (n, K, ...) -> (n, ...) int64 each."""
    seen = (n0.astype(np.int64) + n1) > 0
    shape = (1, orders) + (1,) * (seen.ndim - 2)
    reached = (seen[:, :orders] * np.arange(1, orders + 1).reshape(shape)).max(axis=1, initial=0)
    words_seen = seen[:, orders:orders + words].sum(axis=1)
    if not orders:
        return words_seen, np.zeros(reached.shape, dtype=np.int64)
    at = np.maximum(reached - 1, 0)[:, None]
    a, b = (np.take_along_axis(n[:, :orders], at, axis=1)[:, 0] for n in (n0, n1))
    one_side = np.where(reached > 0, (a == 0) | (b == 0), 0)
    longest = np.where(reached > 0, stretch(kt_split(a, b)), 0).astype(np.int64)
    return (reached * 2 + one_side) * (words + 1) + words_seen, longest


def hashed_rows(context: np.ndarray, nodes: np.ndarray, bits: int) -> np.ndarray:
    """A hashed APM's row for each stream's context (n,) of at most 3 bytes and node (n, ...):
    the two hashed together into 2**bits rows (lpaq's order-2 APM), the top bits of (context *
    255 + node) * 2654435761 mod 2**32. The key a < 2**32 is multiplied in two 16-bit halves,
    so no int64 product overflows (signed overflow is not defined arithmetic)."""
    a = context.astype(np.int64).reshape((-1,) + (1,) * (np.ndim(nodes) - 1)) * 255 + nodes
    h = ((a & 0xFFFF) * 2654435761 + (((a >> 16) * 2654435761) & 0xFFFF) * 65536) & 0xFFFFFFFF
    return h >> (32 - bits)


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

    Four weight sets see the same inputs: one per node and kind of the byte before (`_KIND`),
    one per node and the byte before itself, one per node and shape (`SHAPES`), one per node and
    reach (`reach`). The first learns fast, the second knows more once its rows have learned, the
    third knows when to believe the match model and what follows punctuation, the fourth how far
    the counts reach at this node; a final mixer per node and kind weighs their four stretched
    outputs (paq's two-layer mixer). `predict` takes the cdf the model gives, the count rows of
    this position and the three bytes before it, and returns the cdf to code with; `update`
    learns from the coded symbols of the same rows. The first `orders` count rows are the byte
    orders, shortest first, the `words` after them the word rows; with `match`, the last count row
    is the match model's (its guessed byte counts the run).
    """

    WALK = 3            # tree levels `walk` computes in one pass
    LR = (4, 5, 4, 4)   # weight step = stretch * error(12-bit) * LR[set] >> SHIFT
    FINAL_LR = 1        # the final mixer's step, the same way
    SHIFT = 14
    EARLY = 512         # a weight row's first updates step up to x4, falling to x1 over EARLY
    EARLY_GAIN = 192    # updates (paq's decaying rate): extra step at the first, in 1/64;
    LATE_DECAY = 512    # then 1/64 less every LATE_DECAY updates, down to LATE_FLOOR / 64:
    LATE_FLOOR = 8      # a row that has learned takes small steps (paq8px's decaying rate)
    FINAL_FLOOR = 16    # the final mixer's rows likewise, by their kind row's count, to 1/4
    ONE = 1 << 16       # weight 1.0
    MODEL_START = ONE // 2   # the weights start on half the model and 1/20 of each count row's
    ROW_START = ONE // 20    # inputs, KT and deterministic: the rows are believed from the first
                             # byte, not learned into
    W_MAX = 1 << 24     # |weight| bound: every dot product stays an exact integer in float64

    def __init__(self, n_rows: int, match: bool = False, orders: int = 0, words: int = 0):
        self.K, self.match = n_rows, match
        self.orders, self.words = orders, words
        self.n_in = 2 * n_rows + 3                          # model, K rows, K deterministic rows, longest, bias
        # int32 (|weights| <= W_MAX < 2**31, a position's steps far smaller): half the memory.
        # The four sets are consecutive rows of one array (the compiled loops address them as
        # one), each set a view: set 0 kind * NODES + node, 1 byte * NODES + node, 2 shape * NODES
        # + node, 3 reach * NODES + node. Update counts in int32 too: a row counts at most one
        # update per byte coded, and a file has at most MAX_LENGTH < 2**31 bytes.
        first = np.cumsum([0, KINDS * NODES, VOCAB * NODES, SHAPES * NODES, reaches(orders, words) * NODES])
        self._set_first = first[:-1]
        self._all_weights = np.zeros((first[-1], self.n_in), dtype=np.int32)
        self._all_updates = np.zeros(first[-1], dtype=np.int32)   # updates each row of a set has had
        self.by_kind, self.by_byte, self.by_shape, self.by_reach = (self._all_weights[a:b]
                                                                    for a, b in zip(first, first[1:]))
        self.kind_updates, self.byte_updates, self.shape_updates, self.reach_updates = (
            self._all_updates[a:b] for a, b in zip(first, first[1:]))
        for table in self._weights():
            self._start(table)
        sets = len(self._weights())
        self.final = np.full((KINDS * NODES, sets), self.ONE // sets, dtype=np.int64)   # the sets' outputs, by kind and node
        self.apm_node = APM(NODES)
        self.apm_byte = APM(NODES * VOCAB)
        self.apm_o2 = APM(1 << HASHED_APM_BITS)             # hashed: node x two bytes before
        self.apm_o3 = APM(1 << HASHED_APM_BITS)             # node x three bytes before
        self._dims = np.array([orders, words, HASHED_APM_BITS, HASHED_APM_BITS], dtype=np.int64)
        self._inputs = self._p = self._sets = self._kind = self._prev = self._shape = self._first = None
        self._contexts = self._reach = self._longest = None
        self._on_path = False               # whether the last prediction was the path's only (`_at`)
        self._whole = None                  # `predict`'s 16-bit P(bit 1) at all 255 nodes, until `update`

    def _weights(self) -> tuple[np.ndarray, ...]:
        return self.by_kind, self.by_byte, self.by_shape, self.by_reach

    def _updates(self) -> tuple[np.ndarray, ...]:
        """How many updates each row of each weight set has had, in `_weights`' order."""
        return self.kind_updates, self.byte_updates, self.shape_updates, self.reach_updates

    APM_NAMES = ("node", "byte", "o2", "o3")

    def _apms(self) -> tuple[APM, ...]:
        """The four APMs, in APM_NAMES' order (the order of their cells in the compiled loops)."""
        return self.apm_node, self.apm_byte, self.apm_o2, self.apm_o3

    def _groups(self) -> tuple[np.ndarray, ...]:
        """Each stream's row group in each weight set, in `_weights`' order (`_context`); the
        reach set's is chosen per node (`reach`), so its group here is the first, reach 0."""
        return self._kind, self._prev, self._shape, np.zeros_like(self._kind)

    def _context(self, counts: np.ndarray | None, prev: np.ndarray) -> None:
        """What picks each stream's weight rows and APM rows at this position: the kind of the
        byte before, that byte, the shape, and the two and three bytes before for the hashed APMs.
        prev (n, 3): the byte before, the one before it and the one before that."""
        run = counts[:, -1].max(axis=1) if self.match else np.zeros(len(prev), dtype=np.int64)
        prev = prev.astype(np.int64)
        kind = _KIND[prev[:, :2]]
        self._kind, self._prev = kind[:, 0], prev[:, 0]
        self._first = None
        self._shape = (_RUN[run] * KINDS + kind[:, 1]) * KINDS + kind[:, 0]
        two = prev[:, 0] | prev[:, 1] << 8
        self._contexts = np.stack([two, two | prev[:, 2] << 16])   # (2, n)

    def _start(self, table: np.ndarray) -> None:
        """Weight rows as a fresh mixer has them: the model's input, each count input, no bias."""
        table[:, 0] = self.MODEL_START
        table[:, 1:-1] = self.ROW_START
        table[:, -1] = 0

    def predict(self, cdf: np.ndarray, counts: np.ndarray | None, prev: np.ndarray) -> np.ndarray:
        """cdf (n, 257) from quantize; counts (n, K, 256) uint8 or None; prev (n, 3) the byte
        before each position and the two before that (0 before a stream's start) -> the whole
        tree's distribution (n, 257), to show. Once called, `path` and `walk` read its nodes
        instead of computing them again."""
        K = self.K
        self._context(counts, prev)
        st = stretch(cdf_split(cdf))                                    # (n, NODES)
        splits = count_splits(counts) if K else None                    # (n, K, NODES) each
        every = np.arange(NODES)
        self._reach, self._longest = (reach(*splits, self.orders, self.words) if K
                                      else (np.zeros(st.shape, dtype=np.int64),) * 2)   # (n, NODES) each
        groups = [g[:, None] for g in self._groups()[:3]] + [self._reach]
        dots = []

        def rows():
            """Each set's rows at every node, (n, NODES, n_in) float64, one set at a time: the
            dot products in float64 on small integers, exact in any summation order, since every
            partial sum is an integer below 2**53 (|weights| <= W_MAX)."""
            for t, g in zip(self._weights(), groups):
                w = t.reshape(-1, NODES, self.n_in)[g, every].astype(np.float64)
                dots.append(st * w[:, :, 0] + self._longest * w[:, :, -2] + 256.0 * w[:, :, -1])
                yield w
        if K:
            own = np.arange(len(prev))                                  # stream i reads row group i of its table
            fixes = _count_dots(*splits, ((w, own) for w in rows()))
            dots = [d + f for d, f in zip(dots, fixes)]
        else:
            for _ in rows():
                pass
        self._inputs = st, splits
        self._on_path = False
        self._whole = self._refine(self._mix(dots, every), np.broadcast_to(every, st.shape))
        return split_to_cdf(self._whole)

    def path(self, cdf: np.ndarray, counts: np.ndarray | None, prev: np.ndarray,
             symbols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Alice, who knows each byte: the 16-bit P(bit 1) at the 8 nodes on its path and the
        bits taken, (n, 8) each, computed at those nodes alone (or read from `predict`'s tree)."""
        nodes, bits = path(symbols)                                     # (n, 8)
        if self._whole is not None:
            return self._whole[np.arange(len(symbols))[:, None], nodes], bits
        self._context(counts, prev)
        return self._at(cdf, self._sums(counts), nodes), bits

    def walk(self, cdf: np.ndarray, counts: np.ndarray | None, prev: np.ndarray,
             decide: Callable[[np.ndarray], np.ndarray],
             decode_tree: Callable | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bob, who learns each byte a bit at a time: from the root, the node's P(bit 1) for every
        stream (n,), then `decide` (the decoder) gives the bits, and each stream steps to that
        child. The same nodes and integers as `path` on the bytes found: (symbols, p16, bits).
        The nodes are computed a subtree of WALK levels at a time (one numpy pass costs about
        what 7 nodes do), and only the path's are kept for `update`. With numba and the
        decoder's `decode_tree`, the walk and the decoding are one compiled loop instead, a node
        at a time (`_walk_compiled`)."""
        n = len(prev)
        rows = np.arange(n)
        node = np.zeros(n, dtype=np.int64)                              # 0-based: the root
        p16, bits, parts = np.empty((n, 8), np.int64), np.empty((n, 8), np.int64), []
        sums = None
        if self._whole is None:
            self._context(counts, prev)
            sums = self._sums(counts)
            if kernels.ENABLED and decode_tree is not None:
                return self._walk_compiled(cdf, sums, node, p16, bits, decode_tree)
        depth = 0
        while depth < 8:
            levels = min(self.WALK, 8 - depth)
            level, offset = _SUBTREE[levels]
            below = ((node[:, None] + 1) << level) + offset - 1          # (n, 2**levels - 1), heap order
            sub = self._whole[rows[:, None], below] if self._whole is not None else self._at(cdf, sums, below)
            col = np.zeros(n, dtype=np.int64)                           # the path's column in `below`
            cols = []
            for _ in range(levels):
                p16[:, depth] = sub[rows, col]
                bits[:, depth] = decide(p16[:, depth])
                cols.append(col)
                col = 2 * col + 1 + bits[:, depth]
                node = 2 * node + 1 + bits[:, depth]                    # node j's children: 2j, 2j + 1
                depth += 1
            if self._whole is None:
                parts.append(self._path_state(rows[:, None], np.stack(cols, axis=1)))
        if parts:                                                       # as if `path` had run
            self._inputs, self._sets, self._stretched, self._p, cells, self._reach = (
                np.concatenate(part, axis=1) if isinstance(part[0], np.ndarray) else
                [np.concatenate(column, axis=1) for column in zip(*part)] for part in zip(*parts))
            for apm, cell in zip(self._apms(), cells):
                apm._cell = cell
        return node - NODES, p16, bits                                  # leaf 256 + byte is node 255 + byte

    def _walk_compiled(self, cdf: np.ndarray, sums: np.ndarray | None, node: np.ndarray, p16: np.ndarray,
                       bits: np.ndarray, decode_tree: Callable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`walk` as one compiled loop with the decoder (coding.compiled.walk_tree): each node of
        the path computed as kernels.tree_at computes it, its stages' state kept for `update`."""
        state, path = self._node_loop_args(cdf, sums, (len(node), 8))
        decode_tree(node, p16, bits, state + path)
        self._keep_path(path)
        return node - NODES, p16, bits

    def _sums(self, counts: np.ndarray | None) -> np.ndarray | None:
        """Cumulative counts (n, K, 257): any node's (n0, n1) are two differences of them. The
        compiled loops' are laid out (n, 257, K) (kernels.count_sums)."""
        if not self.K:
            return None
        if kernels.ENABLED:
            sums = np.empty((counts.shape[0], VOCAB + 1, counts.shape[1]), dtype=np.int32)
            kernels.count_sums(counts, sums)
            return sums
        sums = np.zeros(counts.shape[:-1] + (VOCAB + 1,), dtype=np.int32)
        np.cumsum(counts, axis=-1, dtype=np.int32, out=sums[..., 1:])
        return sums

    def _at(self, cdf: np.ndarray, sums: np.ndarray | None, nodes: np.ndarray) -> np.ndarray:
        """16-bit P(bit 1) at `nodes` (n, m) of each stream, computed there alone: every dot
        product the same exact integer as `predict`'s, so every probability the same. Leaves
        the inputs and outputs of each stage for `update` (`_path_state`). With numba, one
        compiled loop (kernels.tree_at) computes what the numpy below defines."""
        if kernels.ENABLED:
            return self._at_compiled(cdf, sums, nodes)
        K = self.K
        n = len(nodes)
        rows = np.arange(n)[:, None]
        lo, mid, hi = LO.take(nodes), MID.take(nodes), HI.take(nodes)  # (n, m) byte edges of each node
        flat = rows * (VOCAB + 1)                                       # flat takes: numpy's cheapest gather
        top = cdf.take(flat + hi)
        x = np.empty(nodes.shape + (self.n_in,), dtype=np.int64)        # (n, m, n_in): the nodes' inputs
        x[..., 0] = stretch(_split12(top - cdf.take(flat + mid), top - cdf.take(flat + lo)))
        x[..., -1] = 256
        if K:
            flat = ((rows * K + np.arange(K)) * (VOCAB + 1))[:, :, None]   # (n, K, 1) into sums (n, K, 257)
            left, middle = sums.take(flat + lo[:, None, :]), sums.take(flat + mid[:, None, :])
            n0 = middle - left                                          # (n, K, m)
            n1 = sums.take(flat + hi[:, None, :]) - middle
            kt, det = _count_inputs(n0, n1)
            x[..., 1:1 + K] = kt.transpose(0, 2, 1)
            x[..., 1 + K:-2] = det.transpose(0, 2, 1)
            self._reach, x[..., -2] = reach(n0, n1, self.orders, self.words)   # (n, m) each
        else:
            self._reach, x[..., -2] = np.zeros(nodes.shape, dtype=np.int64), 0
        self._inputs = x
        xf = x.astype(np.float64)
        dots = [np.einsum("ndi,ndi->nd", xf, table[cell].astype(np.float64))
                for table, cell in zip(self._weights(), self._rows(nodes, self._reach))]
        self._on_path = True
        return self._refine(self._mix(dots, nodes), nodes)

    def _at_compiled(self, cdf: np.ndarray, sums: np.ndarray | None, nodes: np.ndarray) -> np.ndarray:
        p16 = np.empty(nodes.shape, dtype=np.int64)
        state, path = self._node_loop_args(cdf, sums, nodes.shape)
        kernels.tree_at(np.ascontiguousarray(nodes, dtype=np.int64), p16, *state, *path)
        self._keep_path(path)
        return p16

    def _node_loop_args(self, cdf: np.ndarray, sums: np.ndarray | None, shape: tuple) -> tuple[tuple, tuple]:
        """What the compiled node loops (kernels.node_at) read, and fresh arrays for what they
        write at `shape` (n, m) nodes: x (n, m, n_in), the sets' p and stretch (4, n, m), p_mix
        (n, m), the APM cells (4, n, m) and the reach (n, m)."""
        n, m = shape
        if sums is None:
            sums = np.zeros((n, VOCAB + 1, 0), dtype=np.int32)
        sets = len(self._weights())
        state = (cdf, sums, LO, MID, HI, _STRETCH, _SQUASH, _RESTRETCH, self._all_weights, self._first_rows(),
                 self.final.reshape(-1), *(apm.table for apm in self._apms()), self._prev * NODES, self._contexts,
                 self._dims)
        path = (np.empty((n, m, self.n_in), dtype=np.int64), np.empty((sets, n, m), dtype=np.int64),
                np.empty((sets, n, m), dtype=np.int64), np.empty((n, m), dtype=np.int64),
                np.empty((len(self._apms()), n, m), dtype=np.int64), np.empty((n, m), dtype=np.int64))
        return state, path

    def _keep_path(self, path: tuple) -> None:
        """Keep what a compiled node loop wrote for `update` (a set per row of (4, n, m))."""
        self._inputs, self._sets, self._stretched, self._p, cells, self._reach = path
        for apm, cell in zip(self._apms(), cells):
            apm._cell = cell
        self._on_path = True

    def _first_rows(self) -> np.ndarray:
        """(4, n): each stream's row for node 0 in `_all_weights`, for each set (kept until the
        next `_context`)."""
        if self._first is None:
            self._first = np.stack([first + g * NODES for first, g in zip(self._set_first, self._groups())])
        return self._first

    def _path_state(self, rows: np.ndarray, cols: np.ndarray) -> tuple:
        """What `update` reads after `_at`, at columns `cols` (n, m') of its nodes: a walk's path."""
        return (self._inputs[rows, cols], [a[rows, cols] for a in self._sets], [a[rows, cols] for a in self._stretched],
                self._p[rows, cols], [apm._cell[rows, cols] for apm in self._apms()], self._reach[rows, cols])

    def _rows(self, nodes: np.ndarray, reached: np.ndarray) -> list[np.ndarray]:
        """Rows of `by_kind` (and `final`), `by_byte`, `by_shape` and `by_reach` for `nodes`
        (n, ...), chosen by each stream's `_context` and, for the reach set, the reach at each
        node (n, ...)."""
        return [g[:, None] * NODES + nodes for g in self._groups()[:3]] + [reached * NODES + nodes]

    def _mix(self, dots: list[np.ndarray], nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The sets' dot products at `nodes` -> the final mixer's 12-bit probability, and its
        stretch."""
        at = [_squash_index(d.astype(np.int64) >> 16) for d in dots]
        self._sets = [_SQUASH.take(i) for i in at]                      # each set's 12-bit probability
        self._stretched = [_RESTRETCH.take(i) for i in at]              # stretch(squash(.))
        sets = len(dots)
        cell = sets * (self._kind[:, None] * NODES + nodes)             # the final mixer's row, (n, nodes)
        final = self.final.reshape(-1)
        mixed = self._stretched[0] * final.take(cell)
        for j in range(1, sets):
            mixed += self._stretched[j] * final.take(cell + j)
        at = _squash_index(mixed >> 16)
        return _SQUASH.take(at), _RESTRETCH.take(at)

    def _refine(self, mixed: tuple[np.ndarray, np.ndarray], nodes: np.ndarray) -> np.ndarray:
        """The mixture's 12-bit probabilities at `nodes` and their stretch -> 16-bit after the
        APMs, in 1..65535."""
        p_mix, st = mixed
        p_node = self.apm_node.refine(st, nodes)
        p_byte = self.apm_byte.refine(st, self._prev[:, None] * NODES + nodes)
        p_o2 = self.apm_o2.refine(st, hashed_rows(self._contexts[0], nodes, HASHED_APM_BITS))
        p_o3 = self.apm_o3.refine(st, hashed_rows(self._contexts[1], nodes, HASHED_APM_BITS))
        self._p = p_mix
        # 16-bit: the mixture and the four maps weighed 2 : 1 : 2 : 3 : 2 (docs/results.md, format 24)
        return np.clip((p_mix * 32 + p_node + 2 * p_byte + 3 * p_o2 + 2 * p_o3 + 5) // 10, 1, 65535)

    def update(self, symbols: np.ndarray) -> float:
        """Learn from the coded `symbols`; returns what they would have cost before SSE (bits)."""
        nodes, bits = path(symbols)                                     # (n, 8)
        if kernels.ENABLED and self._on_path:
            p_mix = self._update_compiled(nodes, bits)
        else:
            p_mix = self._update_numpy(nodes, bits)
        self._whole = None
        return float(-np.log2(np.where(bits == 1, p_mix, 4096 - p_mix) / 4096.0).sum())

    def _update_compiled(self, nodes: np.ndarray, bits: np.ndarray) -> np.ndarray:
        """`update` after `path` or `walk`, as kernels.tree_update; returns the mixture's P(bit 1)."""
        stack = lambda a: a if isinstance(a, np.ndarray) else np.stack(a)   # noqa: E731  (a walk's are lists)
        kernels.tree_update(self._inputs, nodes, bits, stack(self._sets), stack(self._stretched), self._p,
                            np.stack([apm._cell for apm in self._apms()]), self._reach, self._all_weights,
                            self._all_updates, self._first_rows(), np.array(self.LR, dtype=np.int64), self.EARLY,
                            self.EARLY_GAIN, self.LATE_DECAY, self.LATE_FLOOR, self.FINAL_FLOOR, self.SHIFT,
                            self.W_MAX, self.final.reshape(-1), self.FINAL_LR,
                            tuple(apm.table for apm in self._apms()), APM.RATE)
        np.clip(self.final, -self.W_MAX, self.W_MAX, out=self.final)
        return self._p

    @classmethod
    def step_scale(cls, updates: np.ndarray, early_gain: int, floor: int) -> np.ndarray:
        """A weight row's step in 1/64 after `updates` updates: 64 + early_gain at its first,
        falling to 64 over EARLY updates, then 1/64 less every LATE_DECAY, down to `floor`.
        Early, a row must learn from few examples; late, small steps average out the noise of
        the many (docs/results.md, format 19)."""
        early = 64 + (early_gain * np.maximum(0, cls.EARLY - updates)) // cls.EARLY
        late = np.maximum(floor, 64 - np.maximum(0, updates - cls.EARLY) // cls.LATE_DECAY)
        return np.where(updates < cls.EARLY, early, late)

    def _update_numpy(self, nodes: np.ndarray, bits: np.ndarray) -> np.ndarray:
        """`update`'s definition; returns the mixture's P(bit 1) on the path."""
        rows = np.arange(len(nodes))[:, None]
        if self._on_path:               # already the path's: (n, 8, ...)
            x, p_mix, p_sets, reached = self._inputs, self._p, self._sets, self._reach
            s = np.stack(self._stretched, axis=-1)
            cells = [apm._cell for apm in self._apms()]
        else:                           # all 255 nodes: take the path's
            st, splits = self._inputs
            p_mix, reached = self._p[rows, nodes], self._reach[rows, nodes]
            s = np.stack([v[rows, nodes] for v in self._stretched], axis=-1)
            p_sets = [p[rows, nodes] for p in self._sets]
            cells = [apm._cell[rows, nodes] for apm in self._apms()]
            x = np.empty(nodes.shape + (self.n_in,), dtype=np.int64)    # (n, 8, n_in): the path's inputs
            x[..., 0] = st[rows, nodes]
            x[..., -2] = self._longest[rows, nodes]
            x[..., -1] = 256
            if self.K:                  # the count inputs from the path's splits, (n, 8, K)
                n0, n1 = splits
                x[..., 1:1 + self.K], x[..., 1 + self.K:-2] = _count_inputs(n0[rows, :, nodes], n1[rows, :, nodes])
        rows_of = self._rows(nodes, reached)                            # (n, 8) each
        half = 1 << (self.SHIFT - 1)                                    # every step rounded to the nearest
        for table, updates, cell, p, lr in zip(self._weights(), self._updates(), rows_of, p_sets, self.LR):
            err = ((bits << 12) - p) * lr                               # (n, 8): each set its own error
            err = (err * self.step_scale(updates[cell], self.EARLY_GAIN, self.LATE_FLOOR)) >> 6
            np.add.at(updates, cell, 1)                                 # (scaled by the count before them)
            np.add.at(table, cell, ((x * err[..., None] + half) >> self.SHIFT).astype(np.int32))
            touched = np.unique(cell)                                   # the other rows are within bounds already
            table[touched] = np.clip(table[touched], -self.W_MAX, self.W_MAX)
        err = ((bits << 12) - p_mix) * self.FINAL_LR                   # by the kind row's count after them
        err = (err * self.step_scale(self.kind_updates[rows_of[0]], 0, self.FINAL_FLOOR)) >> 6
        np.add.at(self.final, rows_of[0], (s * err[..., None] + half) >> self.SHIFT)
        np.clip(self.final, -self.W_MAX, self.W_MAX, out=self.final)
        for apm, cell in zip(self._apms(), cells):
            apm.update(cell, bits)
        return p_mix

    # --- checkpoints --------------------------------------------------------------------------
    def _sparse(self) -> tuple[tuple[str, np.ndarray, np.ndarray], ...]:
        """The byte and shape sets, by name, with their update counts: most of their rows are
        never reached on a given file, so a checkpoint keeps only the rows that have learned."""
        return ("byte", self.by_byte, self.byte_updates), ("shape", self.by_shape, self.shape_updates)

    def state(self) -> dict:
        """What a checkpoint keeps. Of the byte and shape sets only the rows that have learned (the
        others still hold their start), as int32 (|weights| <= W_MAX < 2**31): a checkpoint stays
        near the size of what was learned, not of their 251,175 rows."""
        out = {"by_kind": self.by_kind.copy(), "by_reach": self.by_reach.copy(), "final": self.final.copy(),
               **{f"apm_{name}": apm.table.astype(np.uint16) for name, apm in zip(self.APM_NAMES, self._apms())},
               "kind_updates": self.kind_updates.copy(), "reach_updates": self.reach_updates.copy()}
        for name, table, updates in self._sparse():
            rows = np.flatnonzero(updates).astype(np.int32)
            out |= {f"{name}_rows": rows, f"by_{name}": table[rows], f"{name}_updates": updates[rows].astype(np.int32)}
        return out

    def tables(self) -> list[np.ndarray]:
        """Everything the mixer has learned, whole, for the weight digest: a row that changed
        without learning must show too (the byte and shape sets: 40 MB to hash)."""
        return [*self._weights(), self.final, *(apm.table for apm in self._apms()), *self._updates()]

    def load(self, state: dict) -> None:
        for name, table, _ in self._sparse():
            rows = state[f"{name}_rows"]
            n = len(rows)
            if (rows.ndim != 1 or (n and (rows.min() < 0 or rows.max() >= len(table)))
                    or len(np.unique(rows)) != n):
                raise ValueError(f"tree mixer state {name}_rows is not a set of the {name} set's rows")
        dense = (("by_kind", self.by_kind), ("by_reach", self.by_reach), ("final", self.final),
                 *((f"apm_{name}", apm.table) for name, apm in zip(self.APM_NAMES, self._apms())),
                 ("kind_updates", self.kind_updates), ("reach_updates", self.reach_updates))
        shapes = [(key, have.shape) for key, have in dense]
        for name, table, updates in self._sparse():
            n = len(state[f"{name}_rows"])
            shapes += [(f"by_{name}", (n,) + table.shape[1:]), (f"{name}_updates", (n,))]
        for key, shape in shapes:
            if tuple(state[key].shape) != shape:
                raise ValueError(f"tree mixer state {key} has shape {tuple(state[key].shape)}, not {shape}")
        for key, have in dense:
            have[:] = state[key]
        for name, table, updates in self._sparse():
            rows = state[f"{name}_rows"]
            self._start(table)
            updates[:] = 0
            table[rows], updates[rows] = state[f"by_{name}"], state[f"{name}_updates"]

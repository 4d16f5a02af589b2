"""The binary loops of coder.py as compiled loops: the same integers, bit for bit.

With the byte-tree mixer every byte is 8 binary decisions, so the coder's loops run 512 times a
position on 64 streams; in Python that is a tenth of Bob's time. These are the loops of
`ArithmeticEncoder.encode_bits` and `ArithmeticDecoder.decode_bits` with their `_settle`,
written out on int64 (the interval is 48 bits wide; width * p, up to 2**64, is taken in two
halves so that no product leaves int64). coder.py stays the definition; `core.kernels` says
whether these run (numba present, MARSLINK_KERNELS not "numpy").

The decoder reads its bytes lazily, exactly as the definition does: a decision that needs a
byte not yet received is rolled back and the loop returns, the caller fetches one more byte
(which on a live link may wait for the next frame) and calls again.
"""
from __future__ import annotations

import numpy as np

from ..core import kernels
from ..core.kernels import ENABLED, compiled, inline, node_at

STATE_BITS = 48
HALF = 1 << (STATE_BITS - 1)
QUARTER = 1 << (STATE_BITS - 2)
MASK = (1 << STATE_BITS) - 1
LAZY = 1 << 32
PROB_BITS = 16


@inline
def _part(width, p):
    """(width * p) >> PROB_BITS for width <= 2**48, p < 2**16, without a 64-bit overflow."""
    return (width >> PROB_BITS) * p + (((width & 0xFFFF) * p) >> PROB_BITS)


@inline
def _write(state, out, bit):
    """ArithmeticEncoder._write: state[3] the partial byte, state[4] its bits, state[5] bytes in out."""
    state[3] = (state[3] << 1) | bit
    state[4] += 1
    if state[4] == 8:
        out[state[5]] = state[3]
        state[5] += 1
        state[3] = 0
        state[4] = 0


def _encode_bits(state, probs, bits, out):
    """ArithmeticEncoder.encode_bits. state: [low, high, pending, partial byte, its bits, bytes
    written to out]; out must hold every byte this call can write (`encode_capacity`)."""
    low, high = state[0], state[1]
    for i in range(probs.shape[0]):
        mid = low + _part(high - low + 1, probs[i])
        if bits[i]:
            high = mid - 1
        else:
            low = mid
        if high - low < LAZY:
            while not ((low ^ high) & HALF):          # top bits agree: that bit is settled
                bit = low >> (STATE_BITS - 1)
                _write(state, out, bit)
                for _ in range(state[2]):
                    _write(state, out, bit ^ 1)
                state[2] = 0
                low = (low << 1) & MASK
                high = ((high << 1) & MASK) | 1
            while low & ~high & QUARTER:              # low in [Q, H), high in [H, 3Q): defer a bit
                state[2] += 1
                low = (low << 1) ^ HALF
                high = ((high ^ HALF) << 1) | HALF | 1
    state[0], state[1] = low, high


def encode_capacity(n: int, pending: int) -> int:
    """Bytes `n` decisions can write: each narrows the interval by at most 2**-16, so at most
    16 n + 48 bits settle, plus the underflow bits already pending."""
    return (16 * n + 48 + pending) // 8 + 2


@inline
def _read(state, data, ended, allowance):
    """ArithmeticDecoder._read: the next bit of the stream; state[3] the byte being read,
    state[4] its bits left, state[5] the position in data, state[6] bytes read past the end.
    -1 where the byte is not there yet (the stream has not ended), or where one more byte past
    the end would pass the source's `allowance`."""
    if state[4] == 0:
        if state[5] < data.shape[0]:
            state[3] = data[state[5]]
            state[5] += 1
        elif ended and state[6] < allowance:
            state[3] = 0
            state[6] += 1
        else:
            return -1
        state[4] = 8
    state[4] -= 1
    return (state[3] >> state[4]) & 1


@inline
def _decode_one(state, p, data, ended, allowance):
    """One decision of ArithmeticDecoder.decode_bits with P(bit 1) = p / 2**PROB_BITS: the bit,
    or -1 with the state as it was where a byte is missing or past the `allowance`."""
    low, high, code = state[0], state[1], state[2]
    byte, bits_left, at, past = state[3], state[4], state[5], state[6]
    mid = low + _part(high - low + 1, p)
    if code < mid:
        high = mid - 1
        out = 1
    else:
        low = mid
        out = 0
    if high - low < LAZY:
        while not ((low ^ high) & HALF):
            bit = _read(state, data, ended, allowance)
            if bit < 0:
                state[3], state[4], state[5], state[6] = byte, bits_left, at, past
                return -1
            code = ((code << 1) & MASK) | bit
            low = (low << 1) & MASK
            high = ((high << 1) & MASK) | 1
        while low & ~high & QUARTER:
            bit = _read(state, data, ended, allowance)
            if bit < 0:
                state[3], state[4], state[5], state[6] = byte, bits_left, at, past
                return -1
            code = (code & HALF) | ((code << 1) & (MASK >> 1)) | bit
            low = (low << 1) ^ HALF
            high = ((high ^ HALF) << 1) | HALF | 1
    state[0], state[1], state[2] = low, high, code
    return out


def _decode_bits(state, probs, start, data, ended, allowance, out):
    """ArithmeticDecoder.decode_bits from decision `start` on. state: [low, high, code, byte,
    bits left, position in data, bytes read past the end]. Returns the number of decisions
    decoded in all: fewer than len(probs) where a byte is missing, or would be read past the
    end beyond `allowance` (that decision undone: the caller asks the source)."""
    for i in range(start, probs.shape[0]):
        bit = _decode_one(state, probs[i], data, ended, allowance)
        if bit < 0:
            return i
        out[i] = bit
    return probs.shape[0]


def _walk_tree(state, start, data, ended, allowance, node, p16, bits, cdf, sums, lo_of, mid_of, hi_of,
               stretch12, squash, restretch, weights, groups, final, apm_node, apm_byte, apm_o2, apm_o3, byte_rows,
               contexts, dims, x, sets_p, sets_st, p_mix, cells, reach):
    """TreeMixer.walk and decode_bits in one loop: Bob's decisions in the encoder's order, depth
    by depth across the n streams (decision t: depth t // n of stream t % n), each node's
    P(bit 1) computed (core.kernels.node_at, state written at column `depth`) just before its
    bit is decoded. node (n,): each stream's node, 0-based, stepped as its bits come. Returns
    the decisions done in all, as `_decode_bits` does: where a byte is missing, the caller asks
    for it and calls again from there (that node is computed again, from the same state)."""
    n = node.shape[0]
    for t in range(start, 8 * n):
        depth = t // n
        i = t - depth * n
        p = node_at(i, depth, node[i], cdf, sums, lo_of, mid_of, hi_of, stretch12, squash, restretch, weights, groups,
                    final, apm_node, apm_byte, apm_o2, apm_o3, byte_rows, contexts, dims, x, sets_p, sets_st, p_mix,
                    cells, reach)
        bit = _decode_one(state, p, data, ended, allowance)
        if bit < 0:
            return t
        p16[i, depth] = p
        bits[i, depth] = bit
        node[i] = 2 * node[i] + 1 + bit
    return 8 * n


encode_bits = compiled(_encode_bits)
decode_bits = compiled(_decode_bits)
walk_tree = compiled(_walk_tree, depends=(kernels.__file__,))   # node_at comes from there
__all__ = ["ENABLED", "encode_bits", "decode_bits", "walk_tree", "encode_capacity"]

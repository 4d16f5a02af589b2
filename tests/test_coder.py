"""The arithmetic coder: exact round trips and the entropy bound."""
import numpy as np
import pytest

from shared.coding.coder import ArithmeticDecoder, ArithmeticEncoder, ByteSource
from shared.core.config import FREQ_BITS, VOCAB
from shared.core.quantize import quantize


def random_probs(rng, n, sharpness):
    logits = rng.standard_normal((n, VOCAB)) * sharpness
    p = np.exp(logits - logits.max(1, keepdims=True))
    return (p / p.sum(1, keepdims=True)).astype(np.float32)


def test_quantize_gives_every_symbol_a_nonzero_frequency():
    rng = np.random.default_rng(0)
    p = random_probs(rng, 64, 20.0)           # extremely peaked rows
    cdf = quantize(p)
    freqs = np.diff(cdf, axis=1)
    assert freqs.min() >= 1
    assert cdf[:, 0].tolist() == [0] * 64
    assert cdf[:, -1].max() <= (1 << FREQ_BITS) + VOCAB   # float32 sums may exceed 1 by ~1e-6


def test_quantize_of_a_certain_symbol_costs_almost_nothing():
    p = np.zeros((1, VOCAB), dtype=np.float32)
    p[0, 7] = 1.0
    cdf = quantize(p)
    f = cdf[0, 8] - cdf[0, 7]
    assert -np.log2(f / cdf[0, -1]) < 3e-5     # the 1-per-symbol floor is tiny at 24 bits


@pytest.mark.parametrize("sharpness", [0.5, 3.0, 8.0])
def test_round_trip_and_entropy_bound(sharpness):
    rng = np.random.default_rng(int(sharpness * 10))
    n = 4000
    p = random_probs(rng, n, sharpness)
    cdf = quantize(p)
    symbols = np.array([rng.choice(VOCAB, p=row / row.sum()) for row in p.astype(np.float64)])
    enc = ArithmeticEncoder()
    for i in range(0, n, 16):
        enc.code(cdf[i:i + 16], symbols[i:i + 16])
    data = enc.finish()

    ideal = -np.log2(p[np.arange(n), symbols].astype(np.float64)).sum()
    assert len(data) * 8 >= ideal - 1                      # nothing beats the entropy bound
    assert len(data) * 8 <= ideal * 1.0005 + 16            # and the coder wastes almost nothing

    dec = ArithmeticDecoder(ByteSource(data))
    out = np.concatenate([dec.code(cdf[i:i + 16]) for i in range(0, n, 16)])
    assert np.array_equal(out, symbols)


def test_empty_stream_finishes_in_one_byte():
    assert ArithmeticEncoder().finish() == b"\x80"


def test_streaming_take_equals_one_shot_output():
    rng = np.random.default_rng(5)
    p = random_probs(rng, 500, 2.0)
    cdf = quantize(p)
    symbols = rng.integers(0, VOCAB, 500)
    one = ArithmeticEncoder()
    one.code(cdf, symbols)
    whole = one.finish()
    parts, enc = [], ArithmeticEncoder()
    for i in range(0, 500, 50):
        enc.code(cdf[i:i + 50], symbols[i:i + 50])
        parts.append(enc.take())
    parts.append(enc.finish())
    assert b"".join(parts) == whole


def test_decoder_pulls_bytes_on_demand():
    """On a link, Bob's decoder asks for more bytes only when it needs them."""
    rng = np.random.default_rng(9)
    p = random_probs(rng, 300, 2.0)
    cdf = quantize(p)
    symbols = rng.integers(0, VOCAB, 300)
    enc = ArithmeticEncoder()
    enc.code(cdf, symbols)
    data = enc.finish()
    pieces = [data[i:i + 7] for i in range(0, len(data), 7)]
    calls = []

    def refill(src):
        if not pieces:
            return False
        calls.append(1)
        src.feed(pieces.pop(0))
        return True
    dec = ArithmeticDecoder(ByteSource(refill=refill))
    assert np.array_equal(dec.code(cdf), symbols)
    assert len(calls) == -(-len(data) // 7)


def test_the_interval_invariants_hold_after_every_update():
    """What coder.Interval promises after renormalising: the top bits of low and high differ,
    and the width exceeds a quarter (so any slice of a 24-bit total keeps an integer)."""
    from shared.coding.coder import HALF, MASK, QUARTER
    rng = np.random.default_rng(3)
    total = (1 << FREQ_BITS) + VOCAB
    enc = ArithmeticEncoder()
    for i in range(20000):
        kind = i % 3
        if kind == 0:                               # the smallest slice there is
            lo = int(rng.integers(0, total))
            hi = lo + 1
        elif kind == 1:                             # almost certain
            lo, hi = 0, total - 1
        else:
            lo, hi = sorted(int(x) for x in rng.choice(total + 1, 2, replace=False))
        enc.encode(lo, hi, total)
        assert 0 <= enc.low < HALF <= enc.high <= MASK
        assert enc.high - enc.low + 1 > QUARTER


# -- binary decisions (the byte-tree mixer codes each byte as 8 of them) --------------------------

def _bits_and_probs(rng, n):
    """Decisions whose P(bit 1) ranges over the whole 16-bit scale, the extremes included, and
    bits drawn from them."""
    p = rng.integers(1, 1 << 16, n)
    p[::7] = 1                                      # as unlikely as a bit can be
    p[3::7] = (1 << 16) - 1                         # as likely
    bits = (rng.random(n) < p / 65536.0).astype(np.int64)
    return p, bits


def test_binary_decisions_round_trip_at_the_entropy_bound():
    from shared.core.mixer import bit_cost
    rng = np.random.default_rng(11)
    p, bits = _bits_and_probs(rng, 40000)
    enc = ArithmeticEncoder()
    enc.encode_bits(p.tolist(), bits.tolist())
    data = enc.finish()
    ideal = bit_cost(p, bits).sum()
    assert ideal - 1 <= len(data) * 8 <= ideal * 1.0005 + 16
    dec = ArithmeticDecoder(ByteSource(data))
    assert dec.decode_bits(p.tolist()) == bits.tolist()


def test_binary_decisions_do_not_depend_on_how_they_are_grouped_into_calls():
    """Alice encodes a position's 8 x n decisions in one call, Bob decodes them n at a time
    (a tree depth per call), and slice-coded symbols may come between: the same stream."""
    rng = np.random.default_rng(12)
    p, bits = _bits_and_probs(rng, 6000)
    cuts = [0, 1, 64, 65, 600, 1900, 4000, 6000]
    whole = ArithmeticEncoder()
    whole.encode(3, 200, 256)
    whole.encode_bits(p.tolist(), bits.tolist())
    whole.encode(5, 6, 256)
    one = whole.finish()
    parts = ArithmeticEncoder()
    parts.encode(3, 200, 256)
    for a, b in zip(cuts, cuts[1:]):
        parts.encode_bits(p[a:b].tolist(), bits[a:b].tolist())
    parts.encode(5, 6, 256)
    assert parts.finish() == one
    dec = ArithmeticDecoder(ByteSource(one))
    assert dec.decode_row([0, 3, 200, 256]) == 1
    got = []
    for a, b in zip(cuts, cuts[1:]):
        got += dec.decode_bits(p[a:b].tolist())
    assert got == bits.tolist()
    assert dec.decode_row(list(range(257))) == 5


def test_between_binary_decisions_the_width_never_falls_below_lazy():
    """The binary loops settle only below LAZY (coder.Interval): every split keeps both parts."""
    from shared.coding.coder import LAZY
    rng = np.random.default_rng(13)
    enc = ArithmeticEncoder()
    for _ in range(3000):
        p, bits = _bits_and_probs(rng, 8)
        enc.encode_bits(p.tolist(), bits.tolist())
        assert enc.high - enc.low >= LAZY
        assert 0 <= enc.low <= enc.high < 1 << 48

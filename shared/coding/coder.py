"""Arithmetic coding with integer frequencies, spelled out after Nayuki's reference coder.

Both sides keep an interval [low, high] of STATE_BITS-bit integers and narrow it the same
way, in one place (`Interval.update`). Coding a symbol whose cumulative frequencies are
[cum_lo, cum_hi) out of `total` narrows the interval to that slice; whenever the top bit of low
and high agree it is final and is shifted out (`shift`: the encoder writes it, the decoder reads
its next bit); when the interval straddles the middle but has become narrow, an "underflow"
bit is deferred (`underflow`). With 48-bit state and 24-bit totals the rounding loss per symbol
is ~2**-22 bits.

Probabilities become integer frequencies in `quantize` (float64 arithmetic on the float32
model output: exactly reproducible), every symbol at least 1, so any byte is codable.

The decoder pulls bits from a `ByteSource`; on a live link its `refill` blocks until the next
frame arrives, so Bob's decoder simply waits for Alice's bytes.
"""
from __future__ import annotations

from bisect import bisect_right
from typing import Callable

import numpy as np

from ..core.config import PROB_BITS, VOCAB
from . import compiled


STATE_BITS = 48
FULL = 1 << STATE_BITS
HALF = FULL >> 1
QUARTER = FULL >> 2
MASK = FULL - 1
LAZY = 1 << 32                # the binary loops settle once the width falls below this (see Interval)


class Interval:
    """The interval both coders narrow identically; subclasses say what a settled bit means.

    Invariants, true after `__init__` and after every `_settle` (the renormalising loops, which
    end every `update`):
      0 <= low < HALF <= high <= MASK   (the top bits differ: nothing more is settled)
      high - low + 1 > QUARTER          (not inside [QUARTER, 3·QUARTER): no pending underflow)
    So the width is more than 2**(STATE_BITS-2) = 2**46 after a settle, and never below LAZY =
    2**32 in between (the binary loops below), far above any `total` (at most 2**24 + VOCAB):
    every symbol's slice, however small, keeps at least one integer, and low <= new high
    follows from cum_lo < cum_hi.
    """

    def __init__(self):
        self.low, self.high = 0, MASK

    def update(self, cum_lo: int, cum_hi: int, total: int) -> None:
        """Narrow to the slice [cum_lo, cum_hi) of `total`, then renormalise."""
        low = self.low
        width = self.high - low + 1
        high = low + width * cum_hi // total - 1
        low = low + width * cum_lo // total
        self.low, self.high = self._settle(low, high)

    def _settle(self, low: int, high: int) -> tuple[int, int]:
        """Renormalise a narrowed interval: shift out settled bits, defer underflow bits, until
        the invariants hold again."""
        while not ((low ^ high) & HALF):          # top bits agree: that bit is settled
            self.shift(low >> (STATE_BITS - 1))
            low = (low << 1) & MASK
            high = ((high << 1) & MASK) | 1
        while low & ~high & QUARTER:              # low in [Q, H), high in [H, 3Q): defer a bit
            self.underflow()
            low = (low << 1) ^ HALF
            high = ((high ^ HALF) << 1) | HALF | 1
        return low, high

    # A binary decision with P(bit 1) = p / 2**PROB_BITS, p in 1 .. 2**PROB_BITS - 1: bit 1 takes
    # the lower part [low, low + r), r = width * p >> PROB_BITS, bit 0 the rest. The coders' loops
    # below spell this out inline (a call per bit would cost more than the bit) and settle lazily:
    # only once the width has fallen below LAZY (>= 2**(PROB_BITS + 16)), so 1 <= r < width and
    # both parts keep integers, rounding costs under 2**-15 bits a decision, and one `_settle`
    # shifts out a dozen bits instead of one. Encoder and decoder settle at the same widths.

    def shift(self, bit: int) -> None:
        raise NotImplementedError

    def underflow(self) -> None:
        raise NotImplementedError


class ArithmeticEncoder(Interval):
    """Settled bits go out, each followed by the deferred underflow bits (its complement)."""

    def __init__(self):
        super().__init__()
        self.pending = 0                  # deferred underflow bits
        self.partial_byte, self.partial_bits = 0, 0   # bits not yet making a whole byte
        self.out = bytearray()            # whole bytes not yet taken
        self.bytes_taken = 0

    def _write(self, bit: int):
        self.partial_byte = (self.partial_byte << 1) | bit
        self.partial_bits += 1
        if self.partial_bits == 8:
            self.out.append(self.partial_byte)
            self.partial_byte, self.partial_bits = 0, 0

    def shift(self, bit: int) -> None:
        self._write(bit)
        for _ in range(self.pending):
            self._write(bit ^ 1)
        self.pending = 0

    def underflow(self) -> None:
        self.pending += 1

    encode = Interval.update              # coding a symbol is narrowing to its slice

    def encode_bits(self, probs, bits) -> None:
        """Encode each bits[i] with P(bit 1) = probs[i] / 2**PROB_BITS (see Interval). With
        numba, the same loop compiled (compiled.encode_bits)."""
        if compiled.ENABLED:
            probs, bits = np.asarray(probs, dtype=np.int64), np.asarray(bits, dtype=np.int64)
            state = np.array([self.low, self.high, self.pending, self.partial_byte, self.partial_bits, 0], np.int64)
            out = np.empty(compiled.encode_capacity(len(probs), self.pending), np.uint8)
            compiled.encode_bits(state, probs, bits, out)
            self.low, self.high, self.pending, self.partial_byte, self.partial_bits, n = state.tolist()
            self.out += out[:n].tobytes()
            return
        low, high = self.low, self.high
        for p, bit in zip(probs, bits):
            mid = low + (((high - low + 1) * p) >> PROB_BITS)
            if bit:
                high = mid - 1
            else:
                low = mid
            if high - low < LAZY:
                low, high = self._settle(low, high)
        self.low, self.high = low, high

    def code(self, cdf: np.ndarray, symbols: np.ndarray) -> np.ndarray:
        """Encode symbols[i] with the distribution cdf[i]; return the symbols."""
        for lo, hi, total in _slices(cdf, symbols):
            self.update(lo, hi, total)
        return symbols

    def state(self) -> list[int]:
        """Everything needed to continue this stream later (after take(): no bytes held)."""
        assert not self.out, "take() the bytes before saving the coder state"
        return [self.low, self.high, self.pending, self.partial_byte, self.partial_bits, self.bytes_taken]

    def restore(self, state: list[int]):
        self.low, self.high, self.pending, self.partial_byte, self.partial_bits, self.bytes_taken = state
        self.out.clear()

    def take(self) -> bytes:
        """The whole bytes produced since the last take (for streaming)."""
        chunk = bytes(self.out)
        self.bytes_taken += len(chunk)
        self.out.clear()
        return chunk

    def finish(self) -> bytes:
        """Emit the final '1' bit and pad: the decoder reads zeros past the end."""
        self.low, self.high = self._settle(self.low, self.high)   # the binary loops may have left it open
        self._write(1)
        while self.partial_bits:
            self._write(0)
        return self.take()


def _slices(cdf: np.ndarray, symbols: np.ndarray):
    rows = np.arange(len(symbols))
    return zip(cdf[rows, symbols].tolist(), cdf[rows, symbols + 1].tolist(), cdf[:, -1].tolist())


class ByteSource:
    """Coded bytes for the decoder. `refill()` must append more or return False (end of stream)."""

    def __init__(self, data: bytes = b"", refill: Callable[["ByteSource"], bool] | None = None, base: int = 0):
        self.buf = bytearray(data)
        self.pos = 0                      # next byte to read
        self.base = base                  # stream offset of buf[0]
        self.refill = refill
        self.ended = refill is None
        self.past_end = 0                 # bytes of zeros read beyond the real stream
        # how many such bytes a subclass's next_byte hands out before it raises (None: no limit);
        # the compiled decoder stops before passing it and lets next_byte raise
        self.past_end_limit: int | None = None

    def feed(self, data: bytes):
        if self.pos > 65536:              # drop what was consumed, keep memory flat
            del self.buf[:self.pos]
            self.base += self.pos
            self.pos = 0
        self.buf += data

    @property
    def consumed(self) -> int:
        """Stream offset of the next byte the decoder will read."""
        return self.base + self.pos

    def next_byte(self) -> int:
        while self.pos >= len(self.buf):
            if self.ended or not self.refill(self):
                self.ended = True
                self.past_end += 1
                return 0
        b = self.buf[self.pos]
        self.pos += 1
        return b


class ArithmeticDecoder(Interval):
    """Follows the encoder's interval; `code_value` (STATE_BITS bits of the stream, kept inside
    [low, high]) says which slice the encoder chose."""

    def __init__(self, source: ByteSource):
        super().__init__()
        self.source = source
        self.byte, self.bits_left = 0, 0  # the byte being read, and its bits not yet read
        self.code_value = 0
        for _ in range(STATE_BITS):
            self.code_value = (self.code_value << 1) | self._read()

    def state(self) -> list[int]:
        return [self.low, self.high, self.code_value, self.byte, self.bits_left, self.source.consumed]

    @classmethod
    def resume(cls, source: "ByteSource", state: list[int]) -> "ArithmeticDecoder":
        """A decoder continuing from state; `source` must start at the saved stream offset."""
        dec = cls.__new__(cls)
        dec.source = source
        dec.low, dec.high, dec.code_value, dec.byte, dec.bits_left, _ = state
        return dec

    def _read(self) -> int:
        if self.bits_left == 0:
            self.byte, self.bits_left = self.source.next_byte(), 8
        self.bits_left -= 1
        return (self.byte >> self.bits_left) & 1

    def shift(self, bit: int) -> None:
        self.code_value = ((self.code_value << 1) & MASK) | self._read()

    def underflow(self) -> None:
        self.code_value = (self.code_value & HALF) | ((self.code_value << 1) & (MASK >> 1)) | self._read()

    def decode_bits(self, probs) -> list[int]:
        """Decode one bit per entry, bit i with P(bit 1) = probs[i] / 2**PROB_BITS: the bit is 1
        where the code lies in the lower part, as `encode_bits` put it. With numba, the same
        loop compiled (compiled.decode_bits)."""
        if compiled.ENABLED:
            return self._decode_compiled(np.asarray(probs, dtype=np.int64)).tolist()
        return self._decode_reference(probs)

    def decode_bit_array(self, probs: np.ndarray) -> np.ndarray:
        """decode_bits for an array of probabilities, giving an array of bits."""
        if compiled.ENABLED:
            return self._decode_compiled(np.asarray(probs, dtype=np.int64))
        return np.array(self._decode_reference(probs.tolist()), dtype=np.int64)

    def _decode_reference(self, probs: list[int]) -> list[int]:
        """decode_bits' definition, on Python integers."""
        out = []
        low, high, code = self.low, self.high, self.code_value
        for p in probs:
            mid = low + (((high - low + 1) * p) >> PROB_BITS)
            if code < mid:
                high = mid - 1
                out.append(1)
            else:
                low = mid
                out.append(0)
            if high - low < LAZY:
                low, high = self._settle(low, high)
                code = self.code_value
        self.low, self.high = low, high
        return out

    def _decode_compiled(self, probs: np.ndarray) -> np.ndarray:
        """decode_bits through the compiled loop (compiled.decode_bits)."""
        out = np.empty(len(probs), dtype=np.int64)
        self._run_compiled(lambda state, done, data, ended, allowance:
                           compiled.decode_bits(state, probs, done, data, ended, allowance, out), len(probs))
        return out

    def decode_tree(self, node: np.ndarray, p16: np.ndarray, bits: np.ndarray, tree_args: tuple) -> None:
        """Bob's walk down the byte tree and its decoding in one compiled loop (compiled.walk_tree):
        `tree_args` are the tree mixer's node state (TreeMixer.walk); node (n,) steps from the
        root, p16 and bits (n, 8) are filled depth by depth, as the encoder coded them."""
        self._run_compiled(lambda state, done, data, ended, allowance:
                           compiled.walk_tree(state, done, data, ended, allowance, node, p16, bits, *tree_args),
                           bits.size)

    def _run_compiled(self, call: Callable, total: int) -> None:
        """Run a compiled decoding loop, `call(state, done, data, ended, allowance)` -> decisions
        done in all, to `total` decisions: it reads the bytes the source holds; where it needs
        one more, it stops and the source is asked for it, as `_read` would ask."""
        source = self.source
        state = np.array([self.low, self.high, self.code_value, self.byte, self.bits_left, 0, 0], np.int64)
        done = 0
        while True:
            state[5] = source.pos             # a refill may have dropped the bytes already read
            allowance = (1 << 62) if source.past_end_limit is None else source.past_end_limit - source.past_end
            data = np.frombuffer(source.buf, dtype=np.uint8)
            done = call(state, done, data, source.ended, allowance)
            del data                          # the buffer may grow now
            source.pos = int(state[5])
            source.past_end += int(state[6])
            state[6] = 0
            if done == total:
                break
            if source.ended:                  # stopped at the limit (one decision may need several
                for _ in range(source.past_end_limit - source.past_end + 1):   # bytes): the source's reads refuse
                    source.next_byte()
                raise AssertionError("ByteSource.past_end_limit is set but next_byte did not refuse")
            if not source.refill(source):     # stopped for a byte not yet received
                source.ended = True
        self.low, self.high, self.code_value, self.byte, self.bits_left = state[:5].tolist()

    def decode_row(self, cdf_row) -> int:
        """Decode one symbol; cdf_row is a list or a numpy array of cumulative counts (searched
        in place: making a list of a whole row costs more than the search)."""
        total = int(cdf_row[-1])
        width = self.high - self.low + 1
        value = ((self.code_value - self.low + 1) * total - 1) // width   # where the code falls, in frequency units
        if isinstance(cdf_row, list):
            symbol = bisect_right(cdf_row, value) - 1
        else:
            symbol = int(cdf_row.searchsorted(value, side="right")) - 1
        self.update(int(cdf_row[symbol]), int(cdf_row[symbol + 1]), total)
        return symbol

    def code(self, cdf: np.ndarray, symbols=None) -> np.ndarray:
        """Decode one symbol per row of cdf (the `symbols` argument is the encoder's and is ignored)."""
        return np.array([self.decode_row(row) for row in cdf], dtype=np.int64)


# --- the engine's coders: one chunk at a time, with a stored-chunk escape -------------------
#
# Before each chunk's symbols the stream carries one flag, "model" (probability 255/256) or
# "stored" (1/256). A stored chunk codes every byte as uniform, exactly 8 bits: on random or
# already-compressed data this caps the expansion at 8 bits per chunk. The twins learn from
# the chunk either way, so the escape changes only which distribution codes it.
FLAG_MODEL, FLAG_STORED = (0, 255), (255, 256)
FLAG_TOTAL = 256
UNIFORM_CDF = np.arange(VOCAB + 1, dtype=np.int64)
_UNIFORM_LIST = UNIFORM_CDF.tolist()


class ChunkEncoder:
    """Alice's side: buffers a chunk's codings, then emits flag + the cheaper coding. A position
    is coded as each byte's slice of a cdf (`code`) or, with the byte-tree mixer, as each byte's
    8 binary decisions (`code_bits`), depth by depth across the streams: the order in which Bob,
    walking down the tree for every stream at once, decodes them."""

    stored = False            # decided at the chunk's end; the engine asks the decoder only

    def __init__(self):
        self.arith = ArithmeticEncoder()
        self.stored_chunks = 0
        self._chunk: list[tuple] = []           # ("slices", lo, hi, total) or ("bits", probs, bits)
        self._symbols: list[int] = []
        self._model_bits = 0.0

    def begin_chunk(self):
        self._chunk.clear()
        self._symbols.clear()
        self._model_bits = 0.0

    def code(self, cdf: np.ndarray, symbols: np.ndarray) -> np.ndarray:
        """Code symbols[i] as its slice of the distribution cdf[i]."""
        rows = np.arange(len(symbols))
        lo, hi, total = cdf[rows, symbols], cdf[rows, symbols + 1], cdf[:, -1]
        self._model_bits += float(np.log2(total / (hi - lo)).sum())
        self._chunk.append(("slices", lo.tolist(), hi.tolist(), total.tolist()))
        self._symbols.extend(symbols.tolist())
        return symbols

    def code_bits(self, p16: np.ndarray, bits: np.ndarray, symbols: np.ndarray, cost: np.ndarray) -> None:
        """Code symbols[i] as its path's bits[i] (8) with P(bit 1) = p16[i] / 2**16, depth-major;
        `cost` (n,) is what each byte's decisions cost, in bits (the engine's `bit_cost`)."""
        self._model_bits += float(cost.sum())
        p16, bits = p16.T.ravel(), bits.T.ravel()
        self._chunk.append(("bits", p16, bits) if compiled.ENABLED else ("bits", p16.tolist(), bits.tolist()))
        self._symbols.extend(symbols.tolist())

    def end_chunk(self):
        if self._model_bits > 8 * len(self._symbols) + 8:
            self.stored_chunks += 1
            self.arith.encode(*FLAG_STORED, FLAG_TOTAL)
            for s in self._symbols:
                self.arith.encode(s, s + 1, VOCAB)
        else:
            self.arith.encode(*FLAG_MODEL, FLAG_TOTAL)
            for kind, *part in self._chunk:
                if kind == "bits":
                    self.arith.encode_bits(*part)
                else:
                    for lo, hi, total in zip(*part):
                        self.arith.encode(lo, hi, total)

    def take(self) -> bytes:
        return self.arith.take()

    def finish(self) -> bytes:
        return self.arith.finish()


class ChunkDecoder:
    """Bob's side: reads the chunk's flag first, then decodes with the model or uniformly."""

    def __init__(self, source: ByteSource, state: list[int] | None = None):
        self.arith = ArithmeticDecoder(source) if state is None else ArithmeticDecoder.resume(source, state)
        self.stored = False
        self.stored_chunks = 0

    def begin_chunk(self):
        flag = self.arith.decode_row([0, FLAG_MODEL[1], FLAG_TOTAL])
        self.stored = flag == 1
        self.stored_chunks += self.stored

    def code(self, cdf: np.ndarray, symbols=None) -> np.ndarray:
        """Decode one symbol per row (the `symbols` argument is the encoder's and is ignored)."""
        if self.stored:
            return np.array([self.arith.decode_row(_UNIFORM_LIST) for _ in range(len(cdf))], dtype=np.int64)
        return self.arith.code(cdf)

    def decode_bits(self, p16: np.ndarray) -> np.ndarray:
        """One binary decision per stream, (n,) P(bit 1) in 16 bits -> (n,) bits."""
        return self.arith.decode_bit_array(p16)

    def decode_tree(self, node: np.ndarray, p16: np.ndarray, bits: np.ndarray, tree_args: tuple) -> None:
        """Bob's walk and its decisions in one compiled loop (ArithmeticDecoder.decode_tree)."""
        self.arith.decode_tree(node, p16, bits, tree_args)

    def code_bits(self, p16, bits, symbols, cost) -> None:
        """Nothing to do: `decode_bits` or `decode_tree` already read them."""

    def end_chunk(self):
        pass

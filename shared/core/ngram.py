"""Byte n-gram counts, kept identically by both twins: the fast-learning half of the prediction.

A small transformer trained online needs many steps before it knows that "Wherefo" is followed
by "re"; a table of "what followed these k bytes" knows it after one example. So the twin keeps,
for each order k in `ModelConfig.orders`, a table of counts indexed by the last k bytes (hashed
into 2**config.order_bits rows when 256**k is larger), plus up to two word contexts (`words`: the word
being written, case folded, and that word with the one before it; between words, the last word
and the last two), and hands the rows for the current contexts to the model, which learns how
much to trust each (`model.CountMixer`). With `ModelConfig.match`, a match model adds one more
row: the byte that followed the last repeat of the newest bytes, counted by how long that guess
has been right (`MatchModel`).

Everything here is integer arithmetic on numpy arrays (no floats, no library-dependent rounding),
updated at the same point on both sides: after each position's tokens are coded, so the counts
used to predict a token never include that token. With numba, the updates and lookups run as
compiled loops of the same integers (kernels.count_update, count_rows, advance, match_row); the
numpy here is their definition.
"""
from __future__ import annotations

import mmap

import numpy as np

from . import kernels
from .kernels import NOT_TEXT, SHAPE_BACK, SHAPE_RUNS, SHAPE_TEXT
from .config import STRUCTURE_RING, TAG_STACK, VOID_ELEMENTS, WORD_KINDS, kind_bits, order_bits

PURITY = 4                 # levels of "how much of the context one byte owns": <1/3, <2/3, <1, all
RESCALE = 2                # a full row keeps x - (x >> RESCALE) of each count x: three quarters (docs/results.md)


def count_limit(streams: int) -> int:
    """The largest top count a row may carry into an update: one update adds at most one count
    per stream to a row, so a row above it is rescaled first and no count passes 255. The higher
    it is, the more a row remembers; rows are kept as close to full as the streams allow."""
    return 255 - streams


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)   # Fibonacci hashing multiplier
_WORD = np.uint64(0x100000001B3)          # FNV-style multiplier for word hashes
_LETTER = np.zeros(256, dtype=bool)       # bytes that continue a word
_LETTER[ord("a"):ord("z") + 1] = _LETTER[ord("A"):ord("Z") + 1] = _LETTER[ord("0"):ord("9") + 1] = True
_LETTER[0x80:0xE0] = True                  # UTF-8 continuation bytes, and 2-byte letters (Greek, Cyrillic, ...)
_OPENS = np.zeros(256, dtype=bool)         # bytes that end the word before them and start a new one:
_OPENS[0xE0:] = True                       # 3- and 4-byte UTF-8 leads (CJK: a character is a word)
_BRACKET = np.zeros(256, dtype=np.int64)   # +1 opens a bracket, -1 closes one (source code, markup)
_BRACKET[[ord(c) for c in "([{"]] = 1
_BRACKET[[ord(c) for c in ")]}"]] = -1
_TAG_NAME = _LETTER.copy()                 # bytes that continue a markup tag's name after "<"
_TAG_NAME[[ord(c) for c in "/!?-:"]] = True
_FOLD = np.arange(256)
_FOLD[ord("A"):ord("Z") + 1] += 32
# A byte's class in the shape context (Structure "shape"): what the syntax of code and markup is
# made of, whatever the names in it. 15 is "not text": a byte no text has (a control byte but
# tab, newline and return; 127; a byte no UTF-8 has).
_SHAPE = np.full(256, 14, dtype=np.int64)  # 14: other punctuation
_SHAPE[ord("a"):ord("z") + 1] = _SHAPE[0x80:] = 0   # lower case, and UTF-8's letters
_SHAPE[ord("A"):ord("Z") + 1] = 1
_SHAPE[ord("0"):ord("9") + 1] = 2
for _class, _group in enumerate((" \t", "\n\r", "([{<", ")]}>", ".", ",", "=", "\"'", ":;", "_", "&#"), start=3):
    _SHAPE[[ord(c) for c in _group]] = _class
del _class, _group
_SHAPE[[b for b in range(32) if chr(b) not in "\t\n\r"] + [127, 0xC0, 0xC1] + list(range(0xF5, 0x100))] = NOT_TEXT
# the byte classes above, one row per byte, for the compiled loops (kernels.advance)
_CLASSES = np.stack([_LETTER, _OPENS, _BRACKET, _TAG_NAME, _FOLD, _SHAPE], axis=1).astype(np.int64)


def _extend_word(word: np.ndarray, symbols: np.ndarray) -> np.ndarray:
    """A word's hash with one more byte, case folded (word 0: the hash of that byte alone).
    The one definition both word states use: the counts' word contexts and near_word."""
    return (word + _FOLD[symbols].astype(np.uint64) + np.uint64(1)) * _WORD


class MatchModel:
    """The byte that followed the last occurrence of the newest `min_len` bytes (in any stream),
    and how many bytes in a row that guess has been right: long repeats (markup, tables, code,
    binaries) that a hashed order-6 table forgets or never sees whole. A long run survives one
    wrong byte (RECOVER): the guess goes on from the same place. Shown to the mixer as one
    more count row, [byte] = run length (capped at 255), so its trust is learned per log2 of the
    run length like any order's (PAQ's match model, with a learned rather than fixed weight).

    Integer numpy only. Each stream keeps its newest `span` bytes in a ring; a guess that points
    at a byte no longer (or not yet) in a ring is no guess. Updated with the counts, after each
    position is coded, so it too is rebuilt exactly from the bytes on resume.
    """
    BITS = 20                 # rows of the "where did this context last occur" table
    SPAN = 1 << 18            # bytes of history kept per stream, at most
    STRIDE = np.int64(1 << 40)   # a place is stream * STRIDE + position in that stream
    RECOVER = 16              # a guess right this many times in a row survives one wrong byte

    def __init__(self, min_len: int, streams: int, span: int):
        self.min_len, self.streams = min_len, streams
        self.span = 1 << (min(self.SPAN, max(16, span)) - 1).bit_length()   # a power of two
        self.ring = np.zeros((streams, self.span), dtype=np.uint8)
        self.where = np.full(1 << self.BITS, -1, dtype=np.int64)   # context hash -> place after it
        self.written = np.zeros(streams, dtype=np.int64)
        self.place = np.full(streams, -1, dtype=np.int64)   # where each stream's guess is read
        self.run = np.zeros(streams, dtype=np.int64)        # guesses in a row that were right
        self._mask = np.uint64((1 << (8 * min_len)) - 1)
        self._shift = np.uint64(64 - self.BITS)

    def _known(self, place: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(is the byte at `place` in its stream's ring, that byte or 0)."""
        stream, pos = place // self.STRIDE, place % self.STRIDE
        stream = np.where(place >= 0, stream, 0)
        ok = (place >= 0) & (pos < self.written[stream]) & (pos >= self.written[stream] - self.span)
        return ok, np.where(ok, self.ring[stream, pos & (self.span - 1)], 0)

    def lookup(self) -> np.ndarray:
        """(streams, 256) uint8: the guessed byte of each stream counts its run length."""
        ok, byte = self._known(self.place)
        row = np.zeros((self.streams, 256), dtype=np.uint8)
        row[np.flatnonzero(ok), byte[ok]] = np.minimum(self.run[ok], 255)
        return row

    def update(self, rows: np.ndarray, symbols: np.ndarray, history: np.ndarray) -> None:
        """`symbols` were coded on streams `rows` (indices); `history` is their newest 8 bytes
        with the symbol already shifted in."""
        ok, byte = self._known(self.place[rows])
        hit = ok & (byte == symbols)
        # after a long run, one wrong byte (an edited word, a changed digit) is not the end of the
        # repeat: keep reading the same place, with the run length of a fresh guess
        recover = ok & ~hit & (self.run[rows] >= self.RECOVER)
        self.run[rows] = np.where(hit, self.run[rows] + 1, np.where(recover, 1, 0))
        self.place[rows] = np.where(hit | recover, self.place[rows] + 1, -1)
        self.ring[rows, self.written[rows] & (self.span - 1)] = symbols
        self.written[rows] += 1
        full = self.written[rows] >= self.min_len
        key = (((history & self._mask) * _GOLDEN) >> self._shift).astype(np.int64)
        lost = full & (self.place[rows] < 0)                 # no guess: where did this context occur?
        found = self._verified(self.where[key], history)
        self.place[rows] = np.where(lost & found, self.where[key], self.place[rows])
        self.run[rows] = np.where(lost & found, 1, self.run[rows])
        # then remember this occurrence (the byte after it comes next); two streams with the
        # same context: the first stream wins
        keys, first = np.unique(key[full], return_index=True)
        self.where[keys] = (rows[full][first] * self.STRIDE + self.written[rows][full][first])

    def _verified(self, place: np.ndarray, history: np.ndarray) -> np.ndarray:
        """Is `place` a real occurrence of the newest `min_len` bytes, not a hash collision:
        the bytes before it, still in their stream's ring, equal `history` (newest lowest)."""
        back = np.arange(1, self.min_len + 1)
        ok, byte = self._known(np.where(place >= 0, place, -1)[:, None] - back[None, :])
        want = (history[:, None] >> (np.uint64(8) * (back - 1).astype(np.uint64))) & np.uint64(255)
        return (place >= 0) & (ok & (byte == want.astype(np.int64))).all(axis=1)

    def clear(self) -> None:
        self.ring.fill(0)
        self.where.fill(-1)
        self.written.fill(0)
        self.place.fill(-1)
        self.run.fill(0)


# ModelConfig.structure: bit i adds context i
STRUCTURE = ("shape", "column", "record", "align", "nest", "near", "near_word", "skip_word", "word_mark",
             "mark_gap", "line_column", "indirect")
_STREAM_KEY = np.uint64(0x9E3779B1)       # a near context's key times this, xor the stream's number times _WORD
_SLASH = (np.uint64(ord("/")) + np.uint64(1)) * _WORD   # a tag name's hash after "/": where a closing one starts


def _closing(name: bytes) -> int:
    """The hash a closing tag's name "/name" makes in Structure._nest."""
    h = int(_SLASH)
    for b in name:
        h = (h + b + 1) * int(_WORD) % (1 << 64)
    return h


_VOID = np.array([_closing(name.encode()) for n in VOID_ELEMENTS for name in (n, n.upper())], dtype=np.uint64)


class Structure:
    """Contexts for data with a shape, one per bit of `ModelConfig.structure` (STRUCTURE):

      shape   in text, the last byte and the runs of byte classes before it (lower case, upper
              case, digits, blanks, newlines, brackets, quotes and each kind of punctuation:
              `_SHAPE`): the class of each of the last six runs within 32 bytes and how long
              the newest is, "a.a(a, a=" whatever the names (code, markup, the shape of prose);
              elsewhere (a byte no text has among the last 16, or one above 127 among the
              last two: binaries, UTF-16, CJK) the two bytes before the last one (skips a
              changing byte: counters, UTF-16);
      column  the column in the line and the byte above it (markup, tables, source code);
      record  the record length and the bytes one and two records above, once a byte has
              recurred at one fixed distance three times (fixed-length binary records);
      align   the position mod 4 and the byte 4 back (arrays of 32-bit numbers);
      nest    the bracket depth, whether the byte is inside a markup tag "<...>", the line's
              indentation (while only that is written, also the line before's and its last mark:
              ":" opens a block), the last byte, and of markup: inside a tag its name so far (and
              after an attribute's "=", that attribute's name: what its value will be); in a
              closing tag's name also the innermost element open, so "</" is followed by that
              name; between tags that element ("<p>", "<title>": the element the text is in);
              what paq8px's XML and nesting models know, in one context (source code, HTML, XML);
      near    the last two bytes, in rows of this stream's own;
      near_word  the letters of the word so far (0 between words), in rows of this stream's own;
      skip_word  the word so far and the word two before it (skips one: "the X of", "self. ... =");
      word_mark  the word so far and the last byte before it that is neither a letter nor blank
              ("." of a method, "<" or "/" of a tag, "=" of an attribute, "\\" of a command);
      mark_gap  the last two such bytes, how many bytes the last one is back (up to 15) and the
              last byte (inside a call's parentheses, an attribute's quotes, a string);
      line_column  the line's first word, the column (up to 63) and the last byte (a statement's
              keyword or a row's key, and where in its line the byte falls);
      indirect  the last byte and the bytes that followed it the last two times it occurred in
              this stream (paq8px's indirect context: where "=" was last followed by "0" and
              then "1", what follows "=" now).

    The near contexts are what the shared counts lose by coding 64 regions of the input side by
    side: every shared row mixes what all of them said, a near row only what this region said,
    so it knows the identifiers of this function, the tags of this table, the names in this
    chapter (paq8px, coding in one pass, gets that from counts that favour recent bytes).

    Each stream keeps its newest RING bytes; all state is integer numpy and is rebuilt from the
    bytes on resume, like the counts."""

    RING = STRUCTURE_RING
    MAX_RECORD = RING // 2 - 1
    CONFIRM = 3               # a distance seen this many times in a row becomes the record length

    def __init__(self, mask: int, streams: int):
        self.kinds = [k for i, k in enumerate(STRUCTURE) if mask >> i & 1]
        self._kind_ids = np.array([STRUCTURE.index(k) for k in self.kinds], dtype=np.int64)   # for kernels.advance
        self._words = bool(mask & (WORD_KINDS | 1 << STRUCTURE.index("near_word")))   # kinds that read the word
        self.n = len(self.kinds)
        self.ring = np.zeros((streams, self.RING), dtype=np.int64)
        self.pos = np.zeros(streams, dtype=np.int64)             # bytes seen per stream
        self.line = np.zeros(streams, dtype=np.int64)            # where the current line starts
        self.above = np.zeros(streams, dtype=np.int64)           # where the line before it starts
        self.last = np.full((streams, 256), -1, dtype=np.int64)  # where each byte value was last seen
        self.gap = np.zeros((streams, 256), dtype=np.int64)      # and at what distance before that
        self.candidate = np.zeros(streams, dtype=np.int64)
        self.seen = np.zeros(streams, dtype=np.int64)
        self.record = np.zeros(streams, dtype=np.int64)          # 0: no record length found
        self.depth = np.zeros(streams, dtype=np.int64)           # brackets open (never below 0)
        self.tag = np.zeros(streams, dtype=np.uint64)            # hash of the last tag's name
        self.in_tag = np.zeros(streams, dtype=np.int64)          # 1 between "<" and ">"
        self.naming = np.zeros(streams, dtype=np.int64)          # 1 while the tag's name is written
        self.indent = np.zeros((streams, 2), dtype=np.int64)     # spaces and tabs opening the line, and the line before
        self.word = np.zeros(streams, dtype=np.uint64)           # hash of the word so far (0: none)
        self._stream = (np.arange(streams, dtype=np.uint64) + np.uint64(1)) * _WORD
        self.before = np.zeros((streams, 2), dtype=np.uint64)    # the last two words ended (newest first)
        self.marks = np.zeros(streams, dtype=np.uint64)          # the last two bytes neither letter nor blank
        self.after_mark = np.zeros(streams, dtype=np.int64)      # where the byte after the last one is
        self.first = np.zeros(streams, dtype=np.uint64)          # the line's first word (0: none yet)
        self.follow = np.zeros((streams, 256), dtype=np.uint64)  # per byte value: the two bytes after it, newest lowest
        self.stack = np.zeros((streams, TAG_STACK), dtype=np.uint64)   # the markup elements open, innermost last,
        self.n_open = np.zeros(streams, dtype=np.int64)          # each as the hash its closing tag's "/name" makes
        self.cname = np.zeros(streams, dtype=np.uint64)          # that hash of the tag being written
        self.tkind = np.zeros(streams, dtype=np.int64)           # the tag: 0 no name yet, 1 opens, 2 closes, 3 other
        self.attr = np.zeros(streams, dtype=np.uint64)           # in an opening tag, its last attribute's name (0: none)

    @property
    def lead(self) -> np.ndarray:
        """1 where the current line holds only its indentation so far (its column is its indent)."""
        return (self.pos - self.line == self.indent[:, 0]).astype(np.int64)

    def _back(self, distance: np.ndarray) -> np.ndarray:
        """The byte `distance` back in each stream (0 where that is before its start)."""
        where = self.pos - distance
        ok = (distance > 0) & (where >= 0)
        return np.where(ok, self.ring[np.arange(len(self.pos)), where & (self.RING - 1)], 0)

    def contexts(self, history: np.ndarray) -> np.ndarray:
        """(streams, n) uint64 context values; the kind's number in the top byte keeps them apart."""
        out = []
        for i, kind in enumerate(self.kinds):
            if kind == "shape":
                v = self._shape(history)
            elif kind == "column":
                col = self.pos - self.line
                width = self.line - self.above
                up = np.where(col < width, self._back(width), 256)
                v = (np.minimum(col, 255) << 9 | up).astype(np.uint64)
            elif kind == "record":
                r = self.record
                v = ((np.minimum(r, 0xFFFF) << 18) | (self._back(r) << 9) | self._back(2 * r)).astype(np.uint64)
            elif kind == "align":
                v = ((self.pos & 3) << 8 | self._back(np.full_like(self.pos, 4))).astype(np.uint64)
            elif kind == "nest":
                # in a line's indentation (and at its first byte after it): the line before's
                # indentation and its last mark (":", ",", "(" ...), which say how deep this one goes
                lead = np.where(self.lead == 1, np.minimum(self.indent[:, 1], 63) << 16
                                | (self.marks & np.uint64(255)).astype(np.int64) << 22, 0)
                small = (np.minimum(self.depth, 15) << 12 | self.in_tag << 11 | self.naming << 10
                         | np.minimum(self.indent[:, 0], 63) << 4 | lead).astype(np.uint64)
                inner = np.where(self.n_open > 0, self.stack[np.arange(len(self.pos)), np.maximum(self.n_open - 1, 0)],
                                 np.uint64(0))
                key = np.where((self.naming == 1) & (self.tkind == 2), self.tag + inner * _STREAM_KEY,
                               np.where(self.in_tag == 0, inner, self.tag + self.attr * _WORD))
                v = ((key * _WORD) ^ small) << np.uint64(8) | (history & np.uint64(255))
            elif kind in ("skip_word", "word_mark"):
                other = self.before[:, 1] if kind == "skip_word" else self.marks & np.uint64(255)
                v = ((other + np.uint64(i)) * _WORD ^ self.word) & np.uint64((1 << 56) - 1)
            elif kind in ("mark_gap", "line_column"):
                other, at = (self.marks, self.after_mark) if kind == "mark_gap" else (self.first, self.line)
                near = np.minimum(self.pos - at, 15 if kind == "mark_gap" else 63).astype(np.uint64)
                v = (((other + np.uint64(i)) * _WORD ^ (near << np.uint64(8) | (history & np.uint64(255))))
                     & np.uint64((1 << 56) - 1))
            elif kind == "indirect":
                last = history & np.uint64(255)
                v = self.follow[np.arange(len(history)), last.astype(np.int64)] << np.uint64(8) | last
            else:
                key = history & np.uint64(0xFFFF) if kind == "near" else self.word
                v = (key * _STREAM_KEY ^ self._stream) & np.uint64((1 << 56) - 1)
            out.append(v | np.uint64(i + 1) << np.uint64(56))
        return np.stack(out, axis=-1)

    def _shape(self, history: np.ndarray) -> np.ndarray:
        """The shape context (STRUCTURE's docstring): a run is extended while the bytes further
        back have its class; the runs' classes 4 bits each, newest lowest, then the newest run's
        length (up to 7) in 3 bits, the number of runs at bit 40, a flag for text at bit 44."""
        n = len(history)
        back = np.arange(1, SHAPE_BACK + 1)
        where = self.pos[:, None] - back                            # (streams, SHAPE_BACK)
        seen = where >= 0
        cls = np.where(seen, _SHAPE[self.ring[np.arange(n)[:, None], where & (self.RING - 1)]], NOT_TEXT)
        last2 = (history & np.uint64(0xFFFF)).astype(np.int64)
        text = (~((cls[:, :SHAPE_TEXT] == NOT_TEXT) & seen[:, :SHAPE_TEXT]).any(axis=1)
                & (last2 & 0xFF < 128) & (last2 >> 8 < 128))
        mask = np.zeros(n, dtype=np.int64)
        runs = np.zeros(n, dtype=np.int64)
        length = np.zeros(n, dtype=np.int64)
        live = np.ones(n, dtype=bool)                               # still reading runs
        for j in range(SHAPE_BACK):
            live &= seen[:, j]
            c = cls[:, j]
            same = live & (runs > 0) & (c == mask & 15)
            length += same & (runs == 1)
            live &= same | (runs < SHAPE_RUNS)
            new = live & ~same
            mask = np.where(new, mask << 4 | c, mask)
            runs += new
            length = np.where(new & (runs == 1), 1, length)
        shape = ((mask << 3 | np.minimum(length, 7)) | runs << 40 | 1 << 44).astype(np.uint64)
        return np.where(text, shape << np.uint64(8) | (history & np.uint64(255)), (history >> np.uint64(8)) & np.uint64(0xFFFF))

    def update(self, rows: np.ndarray, symbols: np.ndarray) -> None:
        lead = self.lead[rows] == 1 if "nest" in self.kinds else None   # before this byte
        pos = self.pos[rows]
        before = np.where(pos > 0, self.ring[rows, (pos - 1) & (self.RING - 1)], 0)   # the byte `symbols` follow
        self.follow[rows, before] = (self.follow[rows, before] << np.uint64(8) | symbols.astype(np.uint64)) & np.uint64(0xFFFF)
        self.ring[rows, pos & (self.RING - 1)] = symbols
        newline = symbols == 10
        self.above[rows] = np.where(newline, self.line[rows], self.above[rows])
        self.line[rows] = np.where(newline, pos + 1, self.line[rows])
        # record length: a byte value that recurs at the distance it recurred at before
        distance = np.where(self.last[rows, symbols] >= 0, pos - self.last[rows, symbols], 0)
        steady = (distance == self.gap[rows, symbols]) & (distance >= 2) & (distance <= self.MAX_RECORD)
        again = steady & (distance == self.candidate[rows])
        self.seen[rows] = np.where(again, self.seen[rows] + 1, np.where(steady, 1, self.seen[rows]))
        self.candidate[rows] = np.where(steady, distance, self.candidate[rows])
        self.record[rows] = np.where(self.seen[rows] >= self.CONFIRM, self.candidate[rows], self.record[rows])
        self.gap[rows, symbols] = distance
        self.last[rows, symbols] = pos
        self.pos[rows] = pos + 1
        if "nest" in self.kinds:
            self._nest(rows, symbols, newline, lead, before)
        if self._words:
            self._word_state(rows, symbols, newline)

    def _word_state(self, rows: np.ndarray, symbols: np.ndarray, newline: np.ndarray) -> None:
        """The word contexts' state after one more byte: the word so far (letters and digits, case
        folded, and UTF-8 up to 0xDF; 0 between words), and what the word kinds pair it with."""
        letter = _LETTER[symbols]
        word = self.word[rows]
        ends = ~letter & (word != 0)
        self.before[rows] = np.where(ends[:, None], np.stack([word, self.before[rows, 0]], axis=1), self.before[rows])
        mark = ~letter & (symbols != 32) & (symbols != 10) & (symbols != 9)
        self.marks[rows] = np.where(mark, (self.marks[rows] << np.uint64(8) | symbols.astype(np.uint64)) & np.uint64(0xFFFF),
                                    self.marks[rows])
        self.after_mark[rows] = np.where(mark, self.pos[rows], self.after_mark[rows])   # pos: already after this byte
        first = self.first[rows]
        self.first[rows] = np.where(newline, np.uint64(0), np.where(ends & (first == 0), word, first))
        self.word[rows] = np.where(letter, _extend_word(word, symbols), np.uint64(0))

    def _nest(self, rows: np.ndarray, symbols: np.ndarray, newline: np.ndarray, lead: np.ndarray,
              before: np.ndarray) -> None:
        """The nest context's state after one more byte (`before`: the byte before it). A tag's
        name is the bytes after "<" up to the first that cannot continue it, so "</p" and "p" are
        different names. An opening tag's name is also hashed as "/p" would be, and its ">" (not
        "/>", nor an HTML element never closed, VOID_ELEMENTS) pushes it on the stream's stack of
        open elements; a closing tag's ">" pops up to its element, or nothing if it is not open."""
        blank = (symbols == 32) | (symbols == 9)
        self.indent[rows, 1] = np.where(newline, self.indent[rows, 0], self.indent[rows, 1])
        self.indent[rows, 0] = np.where(newline, 0, self.indent[rows, 0] + (lead & blank))
        self.depth[rows] = np.maximum(self.depth[rows] + _BRACKET[symbols], 0)
        opens = symbols == 60                                      # "<": a tag's name follows
        naming = (self.naming[rows] == 1) & _TAG_NAME[symbols]
        sym = symbols.astype(np.uint64) + np.uint64(1)
        kind = self.tkind[rows]
        kind = np.where(naming & (kind == 0), np.where(symbols == 47, 2, np.where(_LETTER[symbols], 1, 3)), kind)
        cname = np.where(naming & (kind == 1), (self.cname[rows] + sym) * _WORD, self.cname[rows])
        self.tag[rows] = np.where(opens, np.uint64(0), np.where(naming, (self.tag[rows] + sym) * _WORD, self.tag[rows]))
        named = (symbols == 61) & (self.in_tag[rows] == 1) & (kind == 1) & (self.word[rows] != 0)   # an attribute's "="
        self.attr[rows] = np.where(opens, np.uint64(0), np.where(named, self.word[rows], self.attr[rows]))
        self.cname[rows] = np.where(opens, _SLASH, cname)
        self.naming[rows] = opens | naming
        ends = (symbols == 62) & (self.in_tag[rows] == 1)          # ">" ends a tag
        for r, kind_r, self_closing in zip(rows[ends], kind[ends], before[ends] == 47):
            if kind_r == 1 and not self_closing and self.cname[r] not in _VOID:
                if self.n_open[r] == TAG_STACK:                    # full: the outermost is forgotten
                    self.stack[r, :-1] = self.stack[r, 1:].copy()
                    self.n_open[r] -= 1
                self.stack[r, self.n_open[r]] = self.cname[r]
                self.n_open[r] += 1
            elif kind_r == 2:
                found = np.flatnonzero(self.stack[r, :self.n_open[r]] == self.tag[r])
                if len(found):
                    self.n_open[r] = found[-1]
        self.tkind[rows] = np.where(opens | (symbols == 62), 0, kind)
        self.in_tag[rows] = np.where(opens, 1, np.where(symbols == 62, 0, self.in_tag[rows]))

    def clear(self) -> None:
        for a in (self.ring, self.pos, self.line, self.above, self.candidate, self.seen, self.record, self.gap,
                  self.depth, self.tag, self.in_tag, self.naming, self.indent, self.word, self.before, self.marks,
                  self.after_mark, self.first, self.follow, self.stack, self.n_open, self.cname, self.tkind, self.attr):
            a.fill(0)
        self.last.fill(-1)


class ContextCounts:
    """Count tables for several context orders over `streams` parallel sub-streams.

    All orders share one (rows, 256) uint8 array; order k owns rows offset[k] .. offset[k] +
    2**bits[k], so a lookup or an update is one numpy call for every order at once.
    """

    def __init__(self, orders: tuple[int, ...], table_bits: int, streams: int, words: int = 0,
                 match: int = 0, span: int = 0, structure: int = 0):
        self.orders, self.words = tuple(orders), words
        # the match model's row comes last, after the orders, the word and the structure contexts
        self.match = MatchModel(match, streams, span) if match else None
        self.shape = Structure(structure, streams) if structure else None
        n_shape = self.shape.n if self.shape else 0
        self.bits = ([order_bits(k, table_bits) for k in self.orders] + [table_bits] * words
                     + [kind_bits(STRUCTURE.index(kind), table_bits) for kind in (self.shape.kinds if self.shape else ())])
        sizes = [1 << b for b in self.bits]
        self.offset = np.cumsum([0] + sizes[:-1]).astype(np.int64)
        self.table = sparse_zeros((sum(sizes), 256))
        self.check = np.zeros(sum(sizes), dtype=np.uint8)    # which context owns each hashed row
        # each row's sum and largest count, kept beside it: eviction and rescaling read 3 bytes of
        # a row instead of its 256 (both are exact: counts only grow by whole steps or rescale)
        self.total = np.zeros(sum(sizes), dtype=np.uint16)    # at most 256 * 255
        self.top = np.zeros(sum(sizes), dtype=np.uint8)
        self.limit = count_limit(streams)
        self.history = np.zeros(streams, dtype=np.uint64)   # last 8 bytes per stream, newest lowest
        self.word = np.zeros(streams, dtype=np.uint64)      # hash of the word being written (0: none)
        self.prev = np.zeros(streams, dtype=np.uint64)      # hash of the word before it
        self.prev2 = np.zeros(streams, dtype=np.uint64)     # and of the word before that
        n = len(self.orders)
        self._masks = np.array([(1 << (8 * k)) - 1 for k in self.orders], dtype=np.uint64)
        self._hashed = np.array([b < 8 * k for k, b in zip(self.orders, self.bits)], dtype=bool)
        self._shift = np.array([64 - b for b in self.bits], dtype=np.uint64)
        self._byte_offset, self._word_offset = self.offset[:n], self.offset[n:n + words]
        self._byte_shift, self._word_shift = self._shift[:n], self._shift[n:n + words]
        self._shape_offset, self._shape_shift = self.offset[n + words:], self._shift[n + words:]
        self._pair = np.array([int(b < 8 * k) for k, b in zip(self.orders, self.bits)] + [1] * (words + n_shape),
                              dtype=np.int64)       # hashed rows come in pairs: row ^ 1 is the other
        self._slots, self._checks = self._compute_slots()

    def _compute_slots(self, history=None, word=None, prev=None, prev2=None) -> tuple[np.ndarray, np.ndarray]:
        """(..., K) home row of each context (last 8 bytes, newest lowest; word hashes) in each
        order, and its check byte (0 where the order is small enough not to be hashed)."""
        history = self.history if history is None else history
        ctx = history[..., None] & self._masks
        product = ctx * _GOLDEN                                 # Fibonacci hashing: the top bits
        slots = np.where(self._hashed, product >> self._byte_shift, ctx).astype(np.int64) + self._byte_offset
        checks = np.where(self._hashed, (product >> (self._byte_shift - np.uint64(8))) & np.uint64(255), 0)
        slots, checks = [slots], [checks]
        if self.words:
            slots, checks = self._word_slots(slots, checks, word, prev, prev2)
        if self.shape is not None:
            ctx = self.shape.contexts(history) if word is None else \
                np.zeros(history.shape + (self.shape.n,), dtype=np.uint64)   # replay: not known
            product = ctx * _GOLDEN
            slots.append((product >> self._shape_shift).astype(np.int64) + self._shape_offset)
            checks.append((product >> (self._shape_shift - np.uint64(8))) & np.uint64(255))
        return np.concatenate(slots, axis=-1), np.concatenate(checks, axis=-1).astype(np.uint8)

    def _word_slots(self, slots, checks, word, prev, prev2):
        word = self.word if word is None else word
        prev = self.prev if prev is None else prev
        prev2 = self.prev2 if prev2 is None else prev2
        # context 1: the word so far, or between words the last word; 2: the word so far and the
        # word before it, or between words the last two words (the first letter of a word is the
        # costliest byte of text, and a word pair predicts it where the last word alone is context 1)
        ctx = np.stack([np.where(word != 0, word, prev * _WORD + np.uint64(1)),
                        np.where(word != 0, word * _WORD + prev, (prev * _WORD + prev2) * _WORD + np.uint64(2))
                        ][:self.words], axis=-1)
        product = ctx * _GOLDEN
        slots.append((product >> self._word_shift).astype(np.int64) + self._word_offset)
        checks.append((product >> (self._word_shift - np.uint64(8))) & np.uint64(255))
        return slots, checks

    def _find(self, slots: np.ndarray, checks: np.ndarray) -> np.ndarray:
        """The row that holds each context: its home row or the other row of the pair if that
        one carries the context's check byte, else -1 (never seen, or pushed out since)."""
        other = slots ^ self._pair
        return np.where(self.check[slots] == checks, slots,
                        np.where(self.check[other] == checks, other, -1))

    def _gather(self, rows: np.ndarray) -> np.ndarray:
        got = self.table[np.maximum(rows, 0)]
        got[rows < 0] = 0
        return got

    @staticmethod
    def _next_words(word, prev, prev2, symbols):
        """Word hashes (the word so far, the last two ended) after one more byte: letters and
        digits (case folded) and UTF-8 continuation bytes extend the word; a 3- or 4-byte UTF-8
        lead ends it and starts the next (scripts without spaces: one character, one word);
        anything else ends it."""
        letter, opens = _LETTER[symbols], _OPENS[symbols]
        ends = ~letter & (word != 0)
        start = np.where(opens, np.uint64(0), word)
        new_word = np.where(letter | opens, _extend_word(start, symbols), np.uint64(0))
        return new_word, np.where(ends, word, prev), np.where(ends, prev, prev2)

    def lookup(self, out: np.ndarray | None = None) -> np.ndarray:
        """Counts for every stream's current context: (streams, K, 256) uint8 (K: orders, word
        contexts, then the match model's row), written into `out` if given."""
        n, K = self._slots.shape
        got = np.empty((n, K + (self.match is not None), 256), dtype=np.uint8) if out is None else out
        if kernels.ENABLED:
            kernels.count_rows(self.table, self.check, self._slots, self._checks, self._pair, got)
        else:
            got[:, :K] = self._gather(self._find(self._slots, self._checks))
        if self.match is not None:
            if kernels.ENABLED:
                m = self.match
                kernels.match_row(m.ring, m.written, m.place, m.run, int(m.STRIDE), got[:, K])
            else:
                got[:, K] = self.match.lookup()
        return got

    def lookup_past(self, tokens: np.ndarray) -> np.ndarray:
        """Counts for predicting each token of `tokens` (n, 8 + W) from the 8 before it, as they
        stand now but with that one occurrence taken out (leave-one-out): what replay trains on.
        Returns (n, W, K, 256) uint8. PAD (or any value > 255) counts as a zero byte."""
        t = np.where(tokens > 255, 0, tokens).astype(np.uint64)
        n, width = t.shape
        W = width - 8
        ctx = np.zeros((n, W), dtype=np.uint64)
        for back in range(1, 9):                       # byte `back` positions before the target
            ctx |= t[:, 8 - back:8 - back + W] << np.uint64(8 * (back - 1))
        word = prev = prev2 = np.zeros((n, W), dtype=np.uint64)  # zeros, not None: not the live state
        if self.words:                                 # word state as far as 8 bytes can tell
            for back in range(8, 0, -1):
                word, prev, prev2 = self._next_words(word, prev, prev2, t[:, 8 - back:8 - back + W].astype(np.int64))
        got = self._gather(self._find(*self._compute_slots(ctx, word, prev, prev2)))   # (n, W, K, 256)
        if self.shape is not None:                     # structure contexts need more than 8 bytes
            first = len(self.orders) + self.words
            got[:, :, first:first + self.shape.n] = 0
        target = t[:, 8:].astype(np.int64)
        own = np.take_along_axis(got, target[:, :, None, None].repeat(got.shape[2], axis=2), axis=3)
        np.put_along_axis(got, target[:, :, None, None].repeat(got.shape[2], axis=2),
                          np.where(own > 0, own - 1, 0).astype(np.uint8), axis=3)
        if self.match is not None:   # where old repeats were is not kept: replay sees no guess
            got = np.concatenate([got, np.zeros(got.shape[:2] + (1, 256), dtype=np.uint8)], axis=2)
        return got

    def update(self, rows: np.ndarray, symbols: np.ndarray) -> None:
        """Count `symbols` (one per active row) in their contexts, then shift them into history."""
        symbols = np.asarray(symbols, dtype=np.int64)
        slots, checks = self._slots[rows], self._checks[rows]   # (n, K)
        if kernels.ENABLED:         # the table work and the contexts' state, as compiled loops
            kernels.count_update(self.table, self.check, self.total, self.top, slots, checks, self._pair,
                                 symbols, self.limit, RESCALE)
            self._advance_compiled(np.flatnonzero(rows) if rows.dtype == bool else np.asarray(rows, dtype=np.int64),
                                   symbols)
            return
        self._count(slots, checks, symbols)
        self.history[rows] = (self.history[rows] << np.uint64(8)) | symbols.astype(np.uint64)
        if self.match is not None:
            index = np.flatnonzero(rows) if rows.dtype == bool else np.asarray(rows, dtype=np.int64)
            self.match.update(index, symbols, self.history[index])
        if self.words:
            self.word[rows], self.prev[rows], self.prev2[rows] = self._next_words(
                self.word[rows], self.prev[rows], self.prev2[rows], symbols)
        if self.shape is not None:
            self.shape.update(np.flatnonzero(rows) if rows.dtype == bool else np.asarray(rows, dtype=np.int64),
                              symbols)
        self._slots, self._checks = self._compute_slots()

    def _advance_compiled(self, rows: np.ndarray, symbols: np.ndarray) -> None:
        """The rest of `update` (history, match model, words, structure, slots) as kernels.advance."""
        m, sh = self.match, self.shape
        none_u8, none_i, none_u = np.zeros((1, 1), np.uint8), np.zeros(1, np.int64), np.zeros(1, np.uint64)
        mm = ((True, m.ring, m.where, m.written, m.place, m.run, m.min_len, m._mask, m._shift, int(m.STRIDE), m.RECOVER)
              if m is not None else (False, none_u8, none_i, none_i, none_i, none_i, 0, np.uint64(0), np.uint64(0), 1, 0))
        if sh is not None:
            ss = (sh._kind_ids, self._shape_shift, self._shape_offset, sh.ring, sh.pos, sh.line, sh.above, sh.last,
                  sh.gap, sh.candidate, sh.seen, sh.record, sh.depth, sh.tag, sh.in_tag, sh.naming, sh.indent,
                  sh.word, sh._stream, sh.before, sh.marks, sh.after_mark, sh.first, sh.follow, sh.stack, sh.n_open,
                  sh.cname, sh.tkind, sh.attr, _VOID, sh.MAX_RECORD, sh.CONFIRM)
        else:
            i2, u2 = np.zeros((1, 1), np.int64), np.zeros((1, 2), np.uint64)
            ss = (none_i[:0], none_u, none_i, i2, none_i, none_i, none_i, i2, i2, none_i, none_i, none_i, none_i,
                  none_u, none_i, none_i, np.zeros((1, 2), np.int64), none_u, none_u, u2, none_u, none_i, none_u,
                  np.zeros((1, 256), np.uint64), u2, none_i, none_u, none_i, none_u, none_u, 0, 0)
        kernels.advance(rows, symbols, self.history, self.word, self.prev, self.prev2, self._slots, self._checks, _CLASSES,
                        self._masks, self._hashed, self._byte_shift, self._byte_offset, self.words, self._word_shift,
                        self._word_offset, *mm, *ss)

    def _count(self, slots: np.ndarray, checks: np.ndarray, symbols: np.ndarray) -> None:
        """Count each symbol in its contexts' rows (slots, checks (n, K); symbols (n,)), claiming
        a row for a context that has none: the definition of kernels.count_update."""
        idx = self._find(slots, checks)
        new = idx < 0
        if new.any():                  # a context without a row takes the emptier row of its pair
            home = slots[new]
            other = home ^ np.broadcast_to(self._pair, slots.shape)[new]
            fuller = self.total[home] > self.total[other]
            victim = np.where(fuller, other, home)
            claimed, first = np.unique(victim, return_index=True)   # two claims: the first stream wins
            self.table[claimed] = 0
            self.total[claimed] = self.top[claimed] = 0
            self.check[claimed] = checks[new][first]
            idx = self._find(slots, checks)          # a context that lost its row is not counted now
        counted = idx >= 0
        idx, counted_symbols = idx[counted], np.broadcast_to(symbols[:, None], counted.shape)[counted]
        hot = np.unique(idx[self.top[idx] > self.limit])
        while len(hot):                # rescaled until the row's top is within the limit
            self.table[hot] -= self.table[hot] >> RESCALE
            self.top[hot] -= self.top[hot] >> RESCALE   # x - (x >> r) never decreases as x grows:
            self.total[hot] = self.table[hot].sum(axis=1)   # the largest stays the largest
            hot = hot[self.top[hot] > self.limit]
        cell, times = np.unique(idx * 256 + counted_symbols, return_counts=True)
        flat = self.table.reshape(-1)
        flat[cell] += times.astype(np.uint8)
        np.add.at(self.total, cell >> 8, times.astype(np.uint16))
        np.maximum.at(self.top, cell >> 8, flat[cell])

    def clear(self) -> None:
        self.table = sparse_zeros(self.table.shape)
        for a in (self.check, self.total, self.top):
            a.fill(0)
        for a in (self.history, self.word, self.prev, self.prev2):
            a.fill(0)
        if self.match is not None:
            self.match.clear()
        if self.shape is not None:
            self.shape.clear()
        self._slots, self._checks = self._compute_slots()


def sparse_zeros(shape: tuple[int, int]) -> np.ndarray:
    """A zeroed uint8 array whose memory arrives 4 KB at a time, where a row is first written.
    Hashed rows are touched sparsely; numpy's own large arrays ask Linux for 2 MB pages, each
    zeroed whole (and on some kernels compacted) at its first touch: seconds of a short run.
    Anonymous memory is zero by definition, so the table costs nothing until it is used."""
    size = shape[0] * shape[1]
    return np.frombuffer(mmap.mmap(-1, max(size, 1)), dtype=np.uint8, count=size).reshape(shape)


def table_bits_for(table_bits: int, length: int) -> int:
    """Rows per hashed order: no more than the input could fill (small files stay small)."""
    return min(table_bits, max(10, int(length).bit_length()))


def trust_index(counts: np.ndarray, n_buckets: int, rows: tuple | None = None,
                out: np.ndarray | None = None) -> np.ndarray:
    """The trust index the model's CountMixer reads for count rows `rows` (all if None) of
    counts (..., K, 256): (..., R) int64, from the context's total (log2 bucket) and the top
    byte's share (kernels.trust_index, compiled); into `out` if given. The evidence itself,
    log(count + prior), is read from the counts where it is used (portable.mix)."""
    if kernels.ENABLED:
        lead, K = counts.shape[:-2], counts.shape[-2]
        pick = np.arange(K) if rows is None else np.asarray(rows, dtype=np.int64)
        if out is not None:
            kernels.trust_index(counts, pick, n_buckets, PURITY, out)
            return out
        flat = counts.reshape((-1, K, counts.shape[-1]))
        index = np.empty((len(flat), len(pick)), dtype=np.int64)
        kernels.trust_index(flat, pick, n_buckets, PURITY, index)
        return index.reshape(lead + index.shape[1:])
    if out is not None:
        out[...] = trust_index(counts, n_buckets, rows)
        return out
    if rows is not None:
        counts = counts[..., rows, :]
    total = counts.sum(axis=-1, dtype=np.int64)
    top = counts.max(axis=-1).astype(np.int64)
    bucket = np.minimum(np.frexp(total)[1], n_buckets - 1)     # 0 for 0, else 1 + floor(log2): exact
    share = np.minimum((top * (PURITY - 1)) // np.maximum(total, 1), PURITY - 2)
    level = np.where((top == total) & (total > 0), PURITY - 1, share)
    return (bucket * PURITY + level) + np.arange(counts.shape[-2]) * n_buckets * PURITY

"""Where the bits go: what each byte of a file cost under a preset, summed by kind of byte.

"Compression = prediction", byte by byte: a model change that moves a file by 0.2% may move
the first letters of words by 5% and nothing else, and the gap to another compressor is rarely
spread evenly. This runs Alice's side of file mode (the real engine and coder, no container),
takes each byte's cost from the engine's step reports (-log2 of the probability the coded byte
had: the area under the loss curve, byte by byte) and, where the preset has a match model, the
match model's guess from the count rows each byte was predicted with. It prints:

  by position in its stream   the streams all start cold at once: their first bytes cost most
  by kind of byte             first letters of words, the rest of words, digits, blanks, ...
  by the match model's guess  no guess, right, wrong; and by how long the guess had been right
  the costliest lines         (text only) each byte's cost as one digit: whole bits, 9 for 9 or more

With --against COSTS, the same bytes as another coder paid for them, side by side: by kind of
byte, by the match model's guess, by history (how many bytes each coder had seen: 64 regions
side by side here, one pass there), and on the bytes both coded with as much history (the same
bytes and the same history: the models' gap alone). COSTS holds one record per byte that coder coded, a
byte and its cost in bits (a little-endian float64), its own bytes first if it codes any:
scripts/paq8px-costs.patch makes paq8px write one (PAQ8PX_COSTS=FILE paq8px -8 INPUT).

Examples (from the repository root):
  .venv/bin/python scripts/where_bits.py devset/docutils-states.py
  .venv/bin/python scripts/where_bits.py shared/texts/mission_log.txt --bytes 40000 --lines 3
  .venv/bin/python scripts/where_bits.py ../shared/corpora/tinyshakespeare.txt --bytes 100000 --set streams=32
  .venv/bin/python scripts/where_bits.py ../shared/corpora/tinyshakespeare.txt --against ts.costs --lines 0
What it showed for the development set: docs/results.md ("2026-12-05 (night)"); against paq8px
on tinyshakespeare: "2026-12-06 (third session)"; on the Python: "2026-12-06 (fifth session)".
"""
from __future__ import annotations

import argparse
import os
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from scripts.common import ScriptParser, count  # noqa: E402
from scripts.tune import apply_overrides  # noqa: E402
from shared.app.files import drop_stdout, read_input  # noqa: E402
from shared.core import numeric  # noqa: E402  (torch-free: pins the profile before torch loads)
from shared.core.config import MAX_LENGTH, preset  # noqa: E402
from shared.core.errors import MarslinkError  # noqa: E402

BANDS = (0, 64, 256, 1024, 4096)            # positions in a stream where a row of the first table starts
RUNS = (1, 2, 4, 8, 16, 32, 256)            # the match model's run lengths, in rows of [a, b)
KINDS = ("first letter of a word", "rest of a word", "digit", "space or tab", "newline",
         "punctuation", "UTF-8 (not ASCII)", "other bytes")


@dataclass
class Costs:
    """Per byte of the input, in file order: what it cost (bits), its position in its stream,
    and the match model's guess for it (-1: none) with the run that guess had been right."""
    data: np.ndarray       # (n,) uint8
    bits: np.ndarray       # (n,) float64
    position: np.ndarray   # (n,) int64
    guess: np.ndarray      # (n,) int64
    run: np.ndarray        # (n,) int64
    ideal_bits: float      # the engine's own total, to check the sum against


def measure(data: bytes, config) -> Costs:
    """Code `data` as Alice does and return what every byte cost. Loads torch: in a script,
    after numeric.activate."""
    from shared.coding.coder import ChunkEncoder
    from shared.core.engine import Twin, Watcher

    class MatchRows(Watcher):
        """Keeps the match model's row (the last count row) of the counts each chunk was coded with."""
        shows_distribution = False

        def __init__(self, context: int):
            self.context, self.rows = context, []

        def chunk(self, step: int, count_window: np.ndarray | None) -> None:
            self.rows.append(count_window[:, self.context:, -1].copy())      # (streams, chunk, 256)

    twin = Twin(config, len(data), data)
    m = config.model
    watch = MatchRows(m.context) if m.match else None
    twin.watcher = watch
    encoder = ChunkEncoder()
    layout = twin.layout
    bits = np.full(len(data), np.nan)
    guess = np.full(len(data), -1, dtype=np.int64)
    run = np.zeros(len(data), dtype=np.int64)
    position = np.zeros(len(data), dtype=np.int64)
    stream = np.arange(config.streams)[:, None]
    while not twin.finished:
        t0 = twin.step * m.chunk
        report = twin.advance(encoder)
        t = t0 + np.arange(m.chunk)[None, :]
        coded = ~np.isnan(report.bits)                                  # (streams, chunk)
        where = (stream * layout.row_len + t)[coded]                     # file offsets, row by row
        bits[where] = report.bits[coded]
        position[where] = np.broadcast_to(t, coded.shape)[coded]
        if watch is not None:
            rows = watch.rows.pop()[coded]                                # (coded, 256)
            longest = rows.max(axis=1).astype(np.int64)
            run[where] = longest
            guess[where] = np.where(longest > 0, rows.argmax(axis=1), -1)
    encoder.finish()
    return Costs(np.frombuffer(data, dtype=np.uint8), bits, position, guess, run, twin.ideal_bits)


COSTS_RECORD = np.dtype([("byte", "u1"), ("bits", "<f8")])   # --against: one per byte the other coder coded
COSTS_LEAD = 64                                               # at most this many bytes of its own before the file's
HISTORY = (0, 1 << 12, 1 << 14, 1 << 16, 1 << 17, 1 << 18, 1 << 19, 3 << 18)   # rows of the history table


class CostsError(ValueError):
    """An --against file that is not the other coder's costs for these bytes: one line."""


def read_costs(path: str, data: bytes, whole: int) -> np.ndarray:
    """The other coder's cost of each byte of `data` (bits, float64), from a costs file whose
    records hold, after at most COSTS_LEAD of the coder's own, the bytes of `data`: the first
    bytes of a file `whole` bytes long (an online coder's costs of a prefix are its costs in the
    whole file)."""
    limit = (whole + COSTS_LEAD) * COSTS_RECORD.itemsize
    more = CostsError(f"--against {path!r} holds the costs of more than {whole + COSTS_LEAD:,} bytes, this file's "
                      f"and {COSTS_LEAD} of the coder's own; give the costs of this file (a coder that transforms "
                      f"a block, as paq8px decodes base64, codes other bytes than the file's)")
    if os.path.isfile(path) and os.stat(path).st_size > limit:    # read_input would say "split the file"
        raise more
    raw = read_input(path, limit + COSTS_RECORD.itemsize)
    if len(raw) > limit:
        raise more
    if len(raw) % COSTS_RECORD.itemsize:
        raise CostsError(f"--against {path!r} is not a costs file: its size is not a multiple of "
                         f"{COSTS_RECORD.itemsize} (a byte and a float64 per byte coded); see --help")
    records = np.frombuffer(raw, dtype=COSTS_RECORD)
    if len(records) < len(data):
        raise CostsError(f"--against {path!r} holds the costs of {len(records):,} bytes, fewer than the "
                         f"{len(data):,} measured here; give the costs of this file")
    want = np.frombuffer(data, dtype=np.uint8)
    for lead in range(min(COSTS_LEAD, len(records) - len(data)) + 1):
        if np.array_equal(records["byte"][lead:lead + len(data)], want):
            bits = records["bits"][lead:lead + len(data)].astype(np.float64)
            if not (np.isfinite(bits).all() and (bits >= 0).all()):
                raise CostsError(f"--against {path!r} has a cost that is negative or not a number; "
                                 f"give the costs another coder wrote")
            return bits
    raise CostsError(f"--against {path!r} holds the costs of other bytes than this file's; "
                     f"give the costs of this file")


def against(c: Costs, theirs: np.ndarray, streams: int) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, headers, rows) of the side-by-side tables: this build's and the other coder's
    cost of the same bytes, each coder's bits/byte at the same history, and both on the bytes
    they coded with as much history."""
    head = ["", "bytes", "this build (B)", "other (B)", "difference (B)", "ratio"]

    def row(name, mask):
        ours, other = float(c.bits[mask].sum()) / 8, float(theirs[mask].sum()) / 8
        return [name, f"{int(mask.sum()):,}", f"{ours:,.0f}", f"{other:,.0f}", f"{ours - other:+,.0f}",
                f"{ours / other:.3f}" if other else "-"]
    kind = kinds(c.data)
    out = [("against the other coder, the same bytes: by kind", head,
            [row("all", np.ones(len(c.bits), dtype=bool))] + [row(name, kind == i) for i, name in enumerate(KINDS)
                                                              if (kind == i).any()])]
    if (c.guess >= 0).any():
        right = (c.guess >= 0) & (c.guess == c.data)
        out.append(("against the other coder, the same bytes: by the match model's guess", head,
                    [row("no guess", c.guess < 0), row("guess right", right), row("guess wrong", (c.guess >= 0) & ~right)]))
    ours_seen, theirs_seen = c.position * streams, np.arange(len(c.bits))
    edges = HISTORY + (1 << 62,)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        a, b = (ours_seen >= lo) & (ours_seen < hi), (theirs_seen >= lo) & (theirs_seen < hi)
        if a.any() or b.any():
            rows.append([f"{lo:,}-{hi - 1:,}" if hi < 1 << 62 else f"{lo:,} on", f"{int(a.sum()):,}",
                         f"{c.bits[a].sum() / a.sum():.3f}" if a.any() else "-", f"{int(b.sum()):,}",
                         f"{theirs[b].sum() / b.sum():.3f}" if b.any() else "-"])
    out.append(("against the other coder, at the same history (bytes seen before; other bytes in each row)",
                ["bytes seen", "bytes here", "bits/byte here", "bytes there", "bits/byte there"], rows))
    # the same bytes, where both coders had seen as much: neither the bytes nor the history differ,
    # so a gap here is the model's, not the order in which the two coders met the file's bytes
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        both = (ours_seen >= lo) & (ours_seen < hi) & (theirs_seen >= lo) & (theirs_seen < hi)
        if both.any():
            ours, other = float(c.bits[both].sum()), float(theirs[both].sum())
            rows.append([f"{lo:,}-{hi - 1:,}" if hi < 1 << 62 else f"{lo:,} on", f"{int(both.sum()):,}",
                         f"{ours / both.sum():.3f}", f"{other / both.sum():.3f}", f"{ours / other:.3f}" if other else "-"])
    out.append(("against the other coder, the same bytes where both had seen as much",
                ["bytes seen", "bytes", "this build", "other", "ratio"], rows))
    return out


def kinds(data: np.ndarray) -> np.ndarray:
    """Each byte's index into KINDS. A word is a run of ASCII letters; digits count apart."""
    letter = ((data >= 65) & (data <= 90)) | ((data >= 97) & (data <= 122))
    after_letter = np.concatenate([[False], letter[:-1]])
    out = np.full(len(data), KINDS.index("other bytes"))
    printable = (data >= 33) & (data <= 126)
    out[printable] = KINDS.index("punctuation")
    out[(data >= 48) & (data <= 57)] = KINDS.index("digit")
    out[letter & after_letter] = KINDS.index("rest of a word")
    out[letter & ~after_letter] = KINDS.index("first letter of a word")
    out[(data == 32) | (data == 9)] = KINDS.index("space or tab")
    out[(data == 10) | (data == 13)] = KINDS.index("newline")
    out[data >= 128] = KINDS.index("UTF-8 (not ASCII)")
    return out


def _row(name: str, mask: np.ndarray, c: Costs, total: float) -> list[str]:
    n = int(mask.sum())
    spent = float(c.bits[mask].sum())
    return [name, f"{n:,}", f"{100 * n / len(c.bits):.1f}%", f"{spent / 8:,.0f}", f"{100 * spent / total:.1f}%",
            f"{spent / n:.3f}" if n else "-"]


def tables(c: Costs) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, headers, rows) of each table but the lines."""
    total = float(c.bits.sum())
    head = ["", "bytes", "of bytes", "cost (B)", "of cost", "bits/byte"]
    edges = BANDS + (1 << 62,)
    by_position = [_row(f"{lo:,}-{hi - 1:,}" if hi < 1 << 62 else f"{lo:,} on", (c.position >= lo) & (c.position < hi),
                        c, total) for lo, hi in zip(edges[:-1], edges[1:]) if lo <= c.position.max()]
    kind = kinds(c.data)
    by_kind = [_row(name, kind == i, c, total) for i, name in enumerate(KINDS)]
    out = [("by position in its stream", head, by_position), ("by kind of byte", head, by_kind)]
    if (c.run > 0).any() or (c.guess >= 0).any():
        right = (c.guess >= 0) & (c.guess == c.data)
        wrong = (c.guess >= 0) & ~right
        by_guess = [_row("no guess", c.guess < 0, c, total) + [""], _row("guess right", right, c, total) + [""],
                    _row("guess wrong", wrong, c, total) + [""]]
        for lo, hi in zip(RUNS[:-1], RUNS[1:]):
            band = (c.guess >= 0) & (c.run >= lo) & (c.run < hi)
            n = int(band.sum())
            label = f"run {lo}" if hi == lo + 1 else (f"run {lo}-{hi - 1}" if hi < 256 else f"run {lo} on")
            row = _row(label, band, c, total)
            row.append(f"{(band & right).sum() / n:.1%}" if n else "")
            by_guess.append(row)
        out.append(("by the match model's guess", head + ["right"], by_guess))
    return out


def costliest_lines(c: Costs, count: int, width: int = 160) -> list[tuple[float, str, str]]:
    """The `count` lines (of text) whose bytes cost most in all: (bits, line, a digit per byte)."""
    if count <= 0 or not len(c.data):
        return []
    text = c.data[(c.data != 10) & (c.data != 13)]
    if ((text >= 32) & (text < 127) | (text >= 128) | (text == 9)).mean() < 0.95:
        return []                                                        # not text: lines mean nothing
    ends = np.flatnonzero(c.data == 10)
    starts = np.concatenate([[0], ends + 1])
    stops = np.concatenate([ends, [len(c.data)]])
    spent = np.add.reduceat(np.append(c.bits, 0.0), starts)    # the 0.0: a start at the very end
    spent = np.where(stops > starts, spent, 0.0)                  # reduceat gives an empty line its first element
    out = []
    for i in np.argsort(-spent, kind="stable")[:count]:
        a, b = int(starts[i]), int(min(stops[i], starts[i] + width))
        line, digits = _annotate(c.data[a:b].tobytes(), c.bits[a:b])
        out.append((float(spent[i]), line, digits))
    return out


def _annotate(raw: bytes, bits: np.ndarray) -> tuple[str, str]:
    """A line as characters and, under each, one digit: the whole bits its bytes cost together
    (a UTF-8 character's bytes summed; a wide character gets a digit and a space, so they align)."""
    chars, digits, at = [], [], 0
    for ch in raw.decode("utf-8", "replace"):
        size = len(ch.encode("utf-8")) if ch != "\ufffd" else 1
        cost = float(bits[at:at + size].sum())
        at += size
        ch = " " if ch == "\t" else ch if ch.isprintable() else "?"
        chars.append(ch)
        digit = str(min(9, int(cost)))
        digits.append(digit + " " if unicodedata.east_asian_width(ch) in "WF" else digit)
    return "".join(chars), "".join(digits)


def _print_table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows + [headers]) for i in range(len(headers))]
    print(f"\n{title}")
    for r in [headers] + rows:
        print("  " + "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths))))


def main(argv=None) -> int:
    ap = ScriptParser("where_bits", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("--bytes", type=count, default=0, help="first N bytes of the file (0 = all)")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides, as scripts/tune.py takes them")
    ap.add_argument("--lines", type=count, default=5, help="how many of the costliest lines to show (0: none)")
    ap.add_argument("--against", metavar="COSTS", help="another coder's cost of each byte of this file, to "
                                                      "compare with (see above)")
    args = ap.parse_args(argv)
    try:
        whole = read_input(args.file, MAX_LENGTH)          # an endless /dev/zero is refused, not read
        config = apply_overrides(preset(args.preset), args.set)
        data = whole[:args.bytes] if args.bytes else whole
        if not data:
            raise CostsError(f"{args.file} is empty: nothing to measure")
        theirs = read_costs(args.against, data, len(whole)) if args.against else None   # before the run
    except (MarslinkError, CostsError) as e:
        print(f"where_bits: error: {e}", file=sys.stderr)
        return 2
    numeric.activate("portable")
    c = measure(data, config)
    total = float(c.bits.sum())
    print(f"{args.file}: {len(data):,} bytes, preset {args.preset}{' ' + ' '.join(args.set) if args.set else ''}: "
          f"{total / 8:,.0f} B of coded bits ({total / len(data):.3f} bits/byte, the container adds its header)")
    for title, headers, rows in tables(c) + (against(c, theirs, config.streams) if theirs is not None else []):
        _print_table(title, headers, rows)
    lines = costliest_lines(c, args.lines)
    if lines:
        print("\nthe costliest lines (the first 160 bytes of each; under each character its cost in whole bits, "
              "9 for 9 or more)")
        for spent, line, digits in lines:
            print(f"  {spent:,.0f} bits\n    {line}\n    {digits}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:             # `| head`: the reader has what it wanted
        drop_stdout()
        sys.exit(0)

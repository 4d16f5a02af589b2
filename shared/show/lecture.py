"""Lecture mode: arithmetic coding, exactly, and then the twins doing it one token at a time.

Part 1 is the classic worked example with exact fractions: four words share [0, 1) in
proportion to their probabilities; the word that occurs owns a slice, here [0.4, 0.6); any
number inside the slice names the word, and the shortest binary fraction inside it, 0.1 (= 0.5),
is sent as the single bit "1". `ExactCoder` does this with `fractions.Fraction`, no rounding.

Part 2 runs a sender twin and a receiver twin in one process on a short text: for every token
the model's top candidates, the true byte, the exact coding interval narrowing (fed with the
quantised distribution the engine codes with: the byte's slice, where the engine's coder takes
the same slice as 8 binary decisions down the byte tree) and the bits it has settled; after every
chunk the training step on both sides (cost of the chunk before/after learning, weight digest).
Mars decodes from the bytes Earth's real coder produced, in a second thread that, like Bob on a
live link, waits whenever it needs bits that have not been sent yet. The result ends with the
description-length ledger, measured as the report measures it (shared/show/ledger.py): the bits
sent, beside the program both sides hold and the trained state that never had to cross.

Importing this module loads the engine, and with it torch (after the numeric profile is pinned):
scripts/lecture.py imports it only once its options and input are checked.
"""
from __future__ import annotations

import math
import queue
import sys
import threading
import time
from collections import deque
from fractions import Fraction

import numpy as np
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..coding.coder import ByteSource, ChunkDecoder, ChunkEncoder
from ..core.config import PAD
from ..core.engine import Twin, Watcher
from ..core.pinned import torch
from ..core.quantize import quantize
from .ledger import PROGRAM, STATE_COMPRESSOR, program_size, state_sizes
from .telemetry import earned_line


# --- exact intervals --------------------------------------------------------------------------

def shortest_binary_fraction(low: Fraction, high: Fraction) -> str:
    """The bits b1..bk of the shortest binary fraction 0.b1...bk with low <= x < high."""
    low, high = Fraction(low), Fraction(high)
    if not (0 <= low < high <= 1):
        raise ValueError(f"need 0 <= low < high <= 1, got [{low}, {high})")
    d = math.lcm(low.denominator, high.denominator)
    a, b = low.numerator * (d // low.denominator), high.numerator * (d // high.denominator)

    def first(k: int) -> int | None:
        """The smallest k-bit numerator c with c / 2**k >= low, if c / 2**k < high."""
        c = -((-a << k) // d)                             # ceil(low * 2**k)
        return c if c * d < b << k else None

    # A k-bit fraction inside means a (k+1)-bit one too (append a 0): search for the least k.
    lo_k, hi_k = 0, 1
    while first(hi_k) is None:
        lo_k, hi_k = hi_k, hi_k * 2
    if first(0) is not None:
        return ""
    while hi_k - lo_k > 1:                                # first(lo_k) is None, first(hi_k) is not
        mid = (lo_k + hi_k) // 2
        if first(mid) is None:
            lo_k = mid
        else:
            hi_k = mid
    return format(first(hi_k), f"0{hi_k}b")


def bits_value(bits: str) -> Fraction:
    """0.b1b2...bk as an exact fraction."""
    return Fraction(int(bits, 2), 1 << len(bits)) if bits else Fraction(0)


def binary_digits(x: Fraction, n: int) -> str:
    """The first n binary digits of x in [0, 1] (truncated)."""
    if n <= 0:
        return ""
    v = (x.numerator << n) // x.denominator
    return format(min(v, (1 << n) - 1), f"0{n}b")


def settled_prefix(low: Fraction, high: Fraction, start: int = 0) -> int:
    """How many leading bits every x in [low, high) shares (they can be sent already)."""
    d = math.lcm(low.denominator, high.denominator)
    return _settled(low.numerator * (d // low.denominator), high.numerator * (d // high.denominator), d, start)


def _settled(lo_num: int, hi_num: int, den: int, start: int = 0) -> int:
    """settled_prefix for [lo_num/den, hi_num/den), in integers."""
    k = start
    while True:
        n = k + 1
        lo = (lo_num << n) // den                        # floor(low * 2**n)
        hi = -((-(hi_num << n)) // den) - 1              # ceil(high * 2**n) - 1
        if lo != hi:
            return k
        k = n


class ExactCoder:
    """Arithmetic coding on exact fractions: the interval [low, low + width) narrows per symbol.

    Kept as integers over one common denominator (low = L/D, width = W/D), so a few hundred
    symbols with 24-bit totals stay fast; `low`, `high` and `width` are exact Fractions.
    """

    def __init__(self):
        self.L, self.W, self.D = 0, 1, 1
        self.settled = 0
        self.symbols = 0

    @property
    def low(self) -> Fraction:
        return Fraction(self.L, self.D)

    @property
    def width(self) -> Fraction:
        return Fraction(self.W, self.D)

    @property
    def high(self) -> Fraction:
        return Fraction(self.L + self.W, self.D)

    def encode(self, cum_lo: int, cum_hi: int, total: int) -> int:
        """Narrow to the symbol's slice; returns how many more bits are now settled."""
        if not 0 <= cum_lo < cum_hi <= total:
            raise ValueError("need 0 <= cum_lo < cum_hi <= total")
        self.L = self.L * total + self.W * cum_lo
        self.W *= cum_hi - cum_lo
        self.D *= total
        self.symbols += 1
        before = self.settled
        self.settled = _settled(self.L, self.L + self.W, self.D, self.settled)
        return self.settled - before

    def code_bits(self) -> str:
        """The message: the shortest binary fraction inside the final interval."""
        return shortest_binary_fraction(self.low, self.high)

    def ideal_bits(self) -> float:
        return math.log2(self.D) - math.log2(self.W)


# --- part 1: the worked example -----------------------------------------------------------------

WORDS = (("dust", Fraction(2, 5)), ("rover", Fraction(1, 5)), ("ice", Fraction(3, 10)), ("sol", Fraction(1, 10)))


def word_intervals(words=WORDS) -> dict[str, tuple[Fraction, Fraction]]:
    out, lo = {}, Fraction(0)
    for w, p in words:
        out[w] = (lo, lo + p)
        lo += p
    assert lo == 1
    return out


def encode_words(message: list[str], words=WORDS) -> tuple[Fraction, Fraction, str]:
    """Exact interval and shortest code of a word sequence under a fixed four-word model."""
    iv = word_intervals(words)
    denom = math.lcm(*(p.denominator for _, p in words))
    coder = ExactCoder()
    for w in message:
        lo, hi = iv[w]
        coder.encode(int(lo * denom), int(hi * denom), denom)
    return coder.low, coder.high, coder.code_bits()


def _dec(x: Fraction) -> str:
    return f"{float(x):.6g}"


def worked_example(console) -> dict:
    iv = word_intervals()
    low, high, bits = encode_words(["rover"])
    line_w = 60
    t = Text()
    t.append("A model gives four words these probabilities; they share [0, 1) in that proportion:\n\n")
    for w, p in WORDS:
        lo, hi = iv[w]
        t.append(f"  {w:<6} p = {float(p):.1f}   [{_dec(lo)}, {_dec(hi)})\n", style="bold" if w == "rover" else "")
    t.append("\n  0")
    colours = {"dust": "on grey30", "rover": "bold black on yellow", "ice": "on grey42", "sol": "on grey23"}
    t.append(" ")
    for w, p in WORDS:
        n = round(float(p) * line_w)
        t.append(f"{w:^{n}}"[:n], style=colours[w])
    t.append(" 1\n")
    pos = 3 + round(0.5 * line_w)
    t.append(" " * pos + "^ 0.5 = 0.1 in binary\n", style="bold yellow")
    t.append("\nThe word that occurs is ")
    t.append("rover", style="bold")
    t.append(f": it owns [{_dec(low)}, {_dec(high)}). Any number in there names it.\n")
    t.append("The shortest binary fraction inside is 0.")
    t.append(bits, style="bold yellow")
    t.append(f" = {bits_value(bits)}, so the whole message is the single bit ")
    t.append(f'"{bits}"', style="bold yellow on grey15")
    t.append(f".\nIdeal cost: -log2 {float(high - low):.1f} = {-math.log2(high - low):.2f} bits; "
             "the decoder reads 0.1000... (zeros past the end) and finds rover's slice.\n")
    low2, high2, bits2 = encode_words(["rover", "ice"])
    t.append("\nTwo words, ")
    t.append("rover ice", style="bold")
    t.append(f": ice's slice of rover's slice is [{_dec(low2)}, {_dec(high2)}) "
             f"(width {float(high2 - low2):.2f}, ideal {-math.log2(high2 - low2):.2f} bits);\n"
             "shortest binary fraction inside: 0.")
    t.append(bits2, style="bold yellow")
    t.append(f" = {float(bits_value(bits2))} → {len(bits2)} bits. "
             "Each word narrows the interval; the bits are its address.\n")
    console.print(Panel(t, title="1 · arithmetic coding in one picture (exact fractions)", title_align="left",
                        border_style="yellow"))
    return {"interval": (low, high), "bits": bits, "two_words": (low2, high2, bits2)}


# --- part 2: the twins, one token at a time ---------------------------------------------------

def _show_byte(b: int) -> str:
    if b == 10:
        return "⏎"
    if b == 32:
        return "␠"
    return chr(b) if 32 < b < 127 else f"\\x{b:02x}"


def _context_text(bs) -> str:
    return "".join("⏎" if b == 10 else chr(b) if 32 <= b < 127 else "·" for b in bs)


class _Stopped(Exception):
    """Mars was told to stop (the lecture ended early) while he waited for bits."""


class MarsThread(threading.Thread):
    """Bob in a thread: decodes from Earth's bytes as they are handed over; waits when short.

    `stop()` ends him between steps: a daemon thread still inside torch when Python exits (the
    reader of `| head` left, Ctrl-C) aborts the whole process."""

    def __init__(self, config, length: int, after_fn):
        super().__init__(daemon=True, name="mars")
        self.config, self.length, self.after_fn = config, length, after_fn
        self.cv = threading.Condition()
        self.inbox: deque = deque()
        self.ended = False
        self.stopping = False
        self.waiting = False
        self.received = 0
        self.results: queue.Queue = queue.Queue()
        self.error: BaseException | None = None

    def feed(self, data: bytes, end: bool = False) -> None:
        with self.cv:
            if data:
                self.inbox.append(data)
                self.received += len(data)
            self.ended = self.ended or end
            self.cv.notify_all()

    def stop(self) -> None:
        with self.cv:
            self.stopping = True
            self.cv.notify_all()

    def starved(self) -> bool:
        with self.cv:
            return self.waiting and not self.inbox and not self.ended

    def _refill(self, source) -> bool:
        with self.cv:
            while not self.inbox and not self.ended and not self.stopping:
                self.waiting = True
                self.cv.notify_all()
                self.cv.wait()
            self.waiting = False
            if self.stopping:
                raise _Stopped
            if self.inbox:
                source.feed(self.inbox.popleft())
                return True
            return False

    def run(self) -> None:
        try:
            twin = Twin(self.config, self.length)
            twin.watcher = LectureWatch()
            log = TokenLog(twin)
            decoder = ChunkDecoder(ByteSource(refill=self._refill))
            while not twin.finished:
                if self.stopping:
                    return
                r = twin.advance(decoder)
                log.record(r)
                self.results.put(("step", r, log.chunk_text(r.step), self.after_fn(twin, log, r.step), twin.digest()))
            self.results.put(("done", log.output(), twin.digest()))
        except _Stopped:
            pass
        except BaseException as e:          # shown by the main thread
            self.error = e
            self.results.put(("error", e))


class LectureWatch(Watcher):
    """Passes every coded position on (Earth's narration) and keeps the counts of the chunk just
    coded, so it can be re-scored after the training step."""

    def __init__(self, on_position=None):
        self.on_position = on_position
        self.count_window = None

    def position(self, step, t, rows, probs, symbols):
        if self.on_position is not None:
            self.on_position(step, t, rows, probs, symbols)

    def chunk(self, step, count_window):
        self.count_window = None if count_window is None else count_window.copy()


class TokenLog:
    """Every token a twin has coded, per stream (lecture texts are short): its text and windows."""

    def __init__(self, twin):
        self.T, self.C = twin.config.model.chunk, twin.config.model.context
        self.lens = [int(x) for x in twin.layout.lens]
        self.rows = np.full((twin.layout.streams, twin.n_steps * self.T), PAD, dtype=np.int64)

    def record(self, report) -> None:
        self.rows[:, (report.step - 1) * self.T:report.step * self.T] = report.tokens

    def chunk_text(self, step: int) -> bytes:
        t0 = (step - 1) * self.T
        return bytes(self.rows[0, t0:min(t0 + self.T, self.lens[0])].astype("uint8"))

    def output(self) -> bytes:
        return b"".join(bytes(self.rows[b, :n].astype("uint8")) for b, n in enumerate(self.lens))

    def window(self, start: int, stop: int):
        out = np.full((self.rows.shape[0], stop - start), PAD, dtype=np.int64)
        lo = max(start, 0)
        out[:, lo - start:] = self.rows[:, lo:stop]
        return out


def chunk_bits_after(twin, log: TokenLog, step: int) -> float | None:
    """Bits/byte the just-learned chunk would cost now, after the training step (display only)."""
    C, T = log.C, log.T
    t0 = (step - 1) * T
    window = log.window(t0 - C, t0 + T)
    with torch.no_grad():
        counts = twin.features_for_training(twin.watcher.count_window) if twin.counts is not None else None
        logits = twin.model(torch.from_numpy(window[:, :-1]), counts)[:, C - 1:, :]
        logp = torch.log_softmax(logits.double(), dim=-1).numpy()
    targets = window[:, C:]
    mask = (t0 + np.arange(T))[None, :] < np.array(log.lens)[:, None]
    if not mask.any():
        return None
    picked = np.take_along_axis(logp, np.where(mask, targets, 0)[..., None], axis=-1)[..., 0]
    return float(-(picked[mask]).sum() / math.log(2) / mask.sum())


class Lecture:
    def __init__(self, console, data: bytes, config, top: int = 5, delay: float = 0.15, step_mode: bool = False,
                 show_every: int = 1):
        if not 1 <= top <= 256 or show_every < 1 or not delay >= 0:
            raise ValueError(f"need 1 <= top <= 256, show_every >= 1, delay >= 0; got {top}, {show_every}, {delay}")
        self.console, self.data, self.config = console, data, config
        self.top, self.delay, self.step_mode, self.show_every = top, delay, step_mode, show_every
        self.exact = ExactCoder()
        self.earth_digests: dict[int, str] = {}
        self.earth_text: dict[int, bytes] = {}
        self.mars_steps = 0
        self.mars_ok = True
        self.token_index = 0

    # -- pacing
    def _pause(self):
        if self.step_mode:
            try:
                if sys.stdin is None:           # closed: no Enter will ever come
                    raise EOFError
                input()
            except EOFError:
                self.step_mode = False
        elif self.delay > 0:
            time.sleep(self.delay)

    # -- Earth's observer: every coded position
    def observe(self, step, t, rows, probs, symbols):
        if not rows[0]:
            return
        p = probs[0].astype("float64")
        sym = int(symbols[0])
        cdf = quantize(probs[:1])[0]
        lo, hi, total = int(cdf[sym]), int(cdf[sym + 1]), int(cdf[-1])
        prev = self.exact.settled
        self.exact.encode(lo, hi, total)
        idx = self.token_index
        self.token_index += 1
        if idx % self.show_every and idx != len(self.data) - 1:
            return
        pos = step * self.config.model.chunk + t
        ctx = self.data[max(0, pos - 40):pos]
        order = sorted(range(256), key=lambda i: -p[i])[:self.top]
        head = Text()
        head.append(f"token {idx + 1}/{len(self.data)}", style="bold")
        head.append(f"  (step {step + 1}, position {t + 1} of the chunk)   context: ")
        head.append(_context_text(ctx), style="grey70")
        head.append("▌", style="bold")
        head.append(f"\ntop {self.top} of 256 candidates (bars relative to the most likely):", style="grey62")
        tab = Table.grid(padding=(0, 1))
        tab.add_column(width=6)
        tab.add_column(width=32)
        tab.add_column()
        shown = set(order)
        top_p = p[order[0]]
        for i in order + ([sym] if sym not in shown else []):
            bar = "█" * max(0, round(p[i] / top_p * 30)) or "▏"      # relative to the top candidate
            mark = "bold green3" if i == sym else ""
            tab.add_row(Text(_show_byte(i), style=mark),
                        Text(bar, style="green3" if i == sym else "grey50"),
                        Text(f"{p[i]:5.3f}" + ("  ← true byte" if i == sym else ""), style=mark))
        cost = -math.log2(p[sym])
        ex = self.exact
        new = ex.settled - prev
        shown_digits = min(ex.settled, 48)
        tail = 10
        lo_d = binary_digits(ex.low, ex.settled + tail)
        hi_d = binary_digits(ex.high, ex.settled + tail)
        iv = Text()
        iv.append(f"true byte {_show_byte(sym)!s}: p = {p[sym]:.4f} → {cost:.2f} bits"
                  f"   (quantised slice {hi - lo:,}/{total:,})\n")
        for name, digits in (("low ", lo_d), ("high", hi_d)):
            iv.append(f"interval {name} 0.")
            old, fresh = digits[:ex.settled - new], digits[ex.settled - new:ex.settled]
            iv.append(("…" + old[-(shown_digits - new):]) if len(old) > shown_digits - new else old, style="grey62")
            iv.append(fresh, style="bold yellow")
            iv.append("|" + digits[ex.settled:] + "…", style="grey50")
            iv.append("\n")
        iv.append(f"width 2^-{ex.ideal_bits():.1f}; bits settled so far {ex.settled}"
                  + (f" (+{new} now)" if new else " (none new: the interval has not left its half yet)"))
        self.console.print(Panel(Group(head, tab, iv), border_style="bright_blue", title="EARTH codes",
                                 title_align="left"))
        self._pause()

    def run(self) -> dict:
        """Both twins over the text, then the verdict; Mars's thread is stopped however it ends."""
        cfg = self.config
        earth = Twin(cfg, len(self.data), self.data)
        earth.watcher = LectureWatch(self.observe)
        earth_log = TokenLog(earth)
        enc = ChunkEncoder()
        mars = MarsThread(cfg, len(self.data), chunk_bits_after)
        start_digest = earth.digest()
        self.earth_digests[0] = start_digest
        mars.start()
        try:
            return self._run(earth, earth_log, enc, mars, start_digest)
        finally:
            mars.stop()
            mars.join(timeout=60)

    def _run(self, earth, earth_log, enc, mars, start_digest) -> dict:
        cfg = self.config
        self.console.print(Panel(Text.assemble(
            f"{len(self.data)} bytes, preset {cfg.preset} with streams={cfg.streams} "
            f"(chunk {cfg.model.chunk}, context {cfg.model.context}), {earth.n_steps} steps. "
            "Both twins start from seed ", (str(cfg.seed), "bold"), ": weights ",
            (start_digest[:12], "bold black on bright_white"), " on both sides."),
            title="2 · Earth and Mars, one token at a time", title_align="left", border_style="yellow"))
        while not earth.finished:
            r = earth.advance(enc)
            earth_log.record(r)
            after = chunk_bits_after(earth, earth_log, r.step)
            digest = earth.digest()
            self.earth_digests[r.step] = digest
            self.earth_text[r.step] = earth_log.chunk_text(r.step)
            sent = enc.take() + (enc.finish() if earth.finished else b"")   # the end comes with the last bytes
            mars.feed(sent, end=earth.finished)
            t = Text()
            t.append(f"EARTH learns (step {r.step}/{earth.n_steps}): ", style="bold bright_blue")
            t.append(f"this chunk cost {r.chunk_bits / max(r.chunk_tokens, 1):.3f} bits/byte to code; after the "
                     f"training step it would cost {after:.3f}; training loss {r.loss:.3f} nats; weights ")
            t.append(digest[:12], style="bold black on bright_white")
            t.append(f"\n{len(sent)} coded bytes leave for Mars ({enc.arith.bytes_taken} so far)")
            self.console.print(t)
            self._collect(mars, r.step)
            self._pause()
        mars.join(timeout=60)
        self._collect(mars, earth.n_steps, final=True)
        return self._verdict(earth, enc, mars)

    def _collect(self, mars: MarsThread, step: int, final: bool = False):
        """Show what Mars has decoded, waiting until he has caught up or needs more bits."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                item = mars.results.get(timeout=0.02)
            except queue.Empty:
                if final and not mars.is_alive() and mars.results.empty():
                    return
                if not final and (self.mars_steps >= step or mars.starved()):
                    if self.mars_steps < step:
                        self.console.print(Text(f"MARS waits: he has {mars.received} bytes and has decoded "
                                                f"{self.mars_steps} steps; his decoder reads 48 bits ahead, so "
                                                "the next chunk waits for more bits", style="red3"))
                    return
                continue
            kind = item[0]
            if kind == "error":
                raise item[1]
            if kind == "done":
                self.mars_output, self.mars_final = item[1], item[2]
                if final:
                    return
                continue
            _, r, text, after, digest = item
            self.mars_steps = r.step
            same_text = text == self.earth_text.get(r.step)
            same_w = digest == self.earth_digests.get(r.step)
            self.mars_ok = self.mars_ok and same_text and same_w
            t = Text()
            t.append(f"MARS decodes step {r.step}: ", style="bold red3")
            t.append(_context_text(text), style="bold")
            t.append(" ✓ same bytes" if same_text else " ✗ DIFFERENT bytes", style="green3" if same_text else "bold red")
            t.append(f"; learns: {r.chunk_bits / max(r.chunk_tokens, 1):.3f} → {after:.3f} bits/byte, "
                     f"loss {r.loss:.3f}; weights ")
            t.append(digest[:12], style="bold black on bright_white")
            t.append(" ✓ = Earth's" if same_w else " ✗ differs from Earth's", style="green3" if same_w else "bold red")
            self.console.print(t)

    def _verdict(self, earth, enc, mars) -> dict:
        out = getattr(self, "mars_output", None)
        final = getattr(self, "mars_final", None)
        ok = out == self.data and final == earth.digest() and self.mars_ok
        payload_bits = enc.arith.bytes_taken * 8
        exact_bits = len(self.exact.code_bits())
        t = Text()
        t.append("✔ VERIFIED " if ok else "✘ MISMATCH ", style="bold black on green3" if ok else "bold white on red")
        t.append(f"  Mars decoded {len(out or b'')} bytes, identical: {out == self.data}; final weights "
                 f"{(final or '')[:12]} = {earth.digest()[:12]}: {final == earth.digest()}\n")
        t.append(f"ideal (area under the loss curve) {earth.ideal_bits:.1f} bits; exact-fraction coder "
                 f"{exact_bits} bits (the symbols only); the engine's coder sent {payload_bits} bits "
                 f"({enc.arith.bytes_taken} bytes: + a 1/256 flag per chunk, {enc.stored_chunks} chunks stored raw, "
                 "whole final byte)\n")
        t.append(f"{len(self.data)} bytes raw = {len(self.data) * 8} bits; this untrained tiny model pays "
                 f"{earth.ideal_bits / len(self.data):.2f} bits/byte, and learns as it goes.\n")
        t.append("what earned the bits: ", style="bold")
        t.append(earned_line({"input_bytes": len(self.data), "bits_by_part": earth.earned,
                              "compressed_bytes": payload_bits // 8}) + "\n")
        ledger = self._ledger(earth, payload_bits)
        t.append(ledger["text"])
        self.console.print(Panel(t, border_style="green3" if ok else "red", title="result", title_align="left"))
        return {"ok": ok, "ideal_bits": earth.ideal_bits, "bits_by_part": earth.earned, "exact_bits": exact_bits, "payload_bits": payload_bits,
                "program": ledger["program"], "state": ledger["state"]}

    @staticmethod
    def _ledger(earth, payload_bits: int) -> dict:
        """The description-length ledger in words, with the report's numbers (shared/show/ledger.py)."""
        program, state = program_size(), state_sizes(earth)
        total = sum(r["gzip_bytes"] for r in state) * 8
        rows = "; ".join(f"{r['name']} {r['gzip_bytes'] * 8:,}" for r in state)
        text = (f"The ledger: the stream cost {payload_bits:,} bits. Both sides already held the program "
                f"({PROGRAM}, {len(program['files'])} files: {program['gzip_bytes'] * 8:,} bits gzip -9), "
                f"which never crossed the link. Sending Mars the trained state instead would cost {total:,} bits "
                f"({STATE_COMPRESSOR}): {rows}.")
        return {"text": text, "program": program, "state": state}
